//! FFmpeg's machine-readable progress (`-progress pipe:1`): blocks of
//! `key=value` lines, each block ended by `progress=continue` or
//! `progress=end`. Pure parsing; nothing here can panic on any input.

use serde::Serialize;

/// One progress report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub frame: u64,
    pub fps: f64,
    /// Output bitrate in kbit/s, when FFmpeg knows it.
    pub bitrate_kbps: Option<f64>,
    pub total_size: u64,
    /// Output timestamp, in microseconds.
    pub out_time_us: i64,
    /// Speed relative to real time, when FFmpeg knows it.
    pub speed: Option<f64>,
    pub dup_frames: u64,
    pub drop_frames: u64,
    /// `progress=end`: FFmpeg is finishing.
    pub ended: bool,
}

impl Progress {
    /// True when this report shows output advancing past `before`.
    pub fn advanced_from(&self, before: &Progress) -> bool {
        self.frame > before.frame
            || self.total_size > before.total_size
            || self.out_time_us > before.out_time_us
    }
}

/// What a stdout line was.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A key of a progress block, taken in.
    Key,
    /// The end of a block: the report.
    Report(Progress),
    /// Not progress (e.g. the SDP FFmpeg prints for RTP outputs).
    Other,
}

/// Accumulates a progress block.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: Progress,
}

const KEYS: &[&str] = &[
    "frame",
    "fps",
    "stream_0_0_q",
    "bitrate",
    "total_size",
    "out_time_us",
    "out_time_ms",
    "out_time",
    "dup_frames",
    "drop_frames",
    "speed",
];

impl ProgressParser {
    pub fn line(&mut self, line: &str) -> Line {
        let Some((key, value)) = line.trim().split_once('=') else {
            return Line::Other;
        };
        let value = value.trim();
        let c = &mut self.current;
        match key {
            "frame" => c.frame = value.parse().unwrap_or(c.frame),
            "fps" => c.fps = value.parse().unwrap_or(c.fps),
            "bitrate" => c.bitrate_kbps = value.trim_end_matches("kbits/s").trim().parse().ok(),
            "total_size" => c.total_size = value.parse().unwrap_or(c.total_size),
            "out_time_us" => c.out_time_us = value.parse().unwrap_or(c.out_time_us),
            "dup_frames" => c.dup_frames = value.parse().unwrap_or(c.dup_frames),
            "drop_frames" => c.drop_frames = value.parse().unwrap_or(c.drop_frames),
            "speed" => c.speed = value.trim_end_matches('x').trim().parse().ok(),
            "progress" => {
                c.ended = value == "end";
                return Line::Report(c.clone());
            }
            k if KEYS.contains(&k) || k.starts_with("stream_") => {}
            _ => return Line::Other,
        }
        Line::Key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "frame=120\nfps=30.00\nstream_0_0_q=20.0\nbitrate=1993.8kbits/s\n\
        total_size=1000000\nout_time_us=4000000\nout_time_ms=4000000\nout_time=00:00:04.000000\n\
        dup_frames=1\ndrop_frames=2\nspeed=1.01x\nprogress=continue\n";

    #[test]
    fn parses_a_block() {
        let mut p = ProgressParser::default();
        let mut reports = Vec::new();
        for line in BLOCK.lines() {
            match p.line(line) {
                Line::Report(r) => reports.push(r),
                Line::Key => {}
                Line::Other => panic!("{line} not recognised"),
            }
        }
        let r = &reports[0];
        assert_eq!(
            (r.frame, r.total_size, r.out_time_us),
            (120, 1_000_000, 4_000_000)
        );
        assert_eq!((r.dup_frames, r.drop_frames), (1, 2));
        assert_eq!(r.bitrate_kbps, Some(1993.8));
        assert_eq!(r.speed, Some(1.01));
        assert!(!r.ended);
    }

    #[test]
    fn unknown_values_and_other_lines() {
        let mut p = ProgressParser::default();
        assert_eq!(p.line("bitrate=N/A"), Line::Key);
        assert_eq!(p.line("speed=N/A"), Line::Key);
        assert_eq!(p.line("SDP:"), Line::Other);
        assert_eq!(p.line("a=rtpmap:102 H264/90000"), Line::Other);
        let Line::Report(r) = p.line("progress=end") else {
            panic!()
        };
        assert!(r.ended && r.bitrate_kbps.is_none() && r.speed.is_none());
    }

    #[test]
    fn advancing_is_any_counter_moving() {
        let a = Progress {
            frame: 10,
            ..Default::default()
        };
        let b = Progress {
            frame: 10,
            total_size: 5,
            ..a.clone()
        };
        assert!(b.advanced_from(&a));
        assert!(!a.advanced_from(&a));
    }
}
