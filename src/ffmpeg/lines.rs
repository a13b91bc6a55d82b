//! FFmpeg's output as lines: splitting a byte stream at `\n` or `\r`, and the
//! severity of a line from its `[level]` tag. Pure, and total: any bytes, any
//! length, any encoding, with or without newlines.

use bytes::BytesMut;

/// The severity of an FFmpeg log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// How far into a line the `[level]` tag is looked for: it follows an
/// optional "[component @ 0x...] " prefix.
const TAG_WITHIN: usize = 96;

impl Severity {
    /// Reads the `[level]` tag that `-loglevel level+...` puts on each line;
    /// an untagged line is info.
    pub fn of(line: &str) -> Self {
        const TAGS: &[(&[u8], Severity)] = &[
            (b"[panic]", Severity::Error),
            (b"[fatal]", Severity::Error),
            (b"[error]", Severity::Error),
            (b"[warning]", Severity::Warn),
            (b"[info]", Severity::Info),
            (b"[verbose]", Severity::Debug),
            (b"[debug]", Severity::Debug),
            (b"[trace]", Severity::Trace),
        ];
        // Bytes, not chars: the bound may fall inside a multi-byte
        // character, which is harmless because the tags, matched as bytes,
        // are ASCII.
        let head = &line.as_bytes()[..line.len().min(TAG_WITHIN)];
        TAGS.iter()
            .filter_map(|(tag, sev)| find(head, tag).map(|i| (i, *sev)))
            .min_by_key(|(i, _)| *i)
            .map_or(Severity::Info, |(_, sev)| sev)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a byte stream into lines at `\n` or `\r`, decoding each lossily,
/// so bytes that are not UTF-8 cannot break the relay.
#[derive(Default)]
pub struct LineSplitter {
    partial: BytesMut,
}

/// A line longer than this is cut, so a stream without newlines cannot grow
/// memory without bound.
pub const MAX_LINE: usize = 8 * 1024;

impl LineSplitter {
    pub fn push(&mut self, chunk: &[u8], mut out: impl FnMut(String)) {
        for &b in chunk {
            if b == b'\n' || b == b'\r' {
                if !self.partial.is_empty() {
                    out(String::from_utf8_lossy(&self.partial).into_owned());
                    self.partial.clear();
                }
            } else if self.partial.len() < MAX_LINE {
                self.partial.extend_from_slice(&[b]);
            }
        }
    }

    pub fn finish(&mut self, out: impl FnOnce(String)) {
        if !self.partial.is_empty() {
            out(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffmpeg::progress::ProgressParser;
    use proptest::prelude::*;

    #[test]
    fn severity_follows_the_level_tag() {
        assert_eq!(
            Severity::of("[libx264 @ 0x55] [info] frame I:3"),
            Severity::Info
        );
        assert_eq!(
            Severity::of("[error] Error opening input file x"),
            Severity::Error
        );
        assert_eq!(Severity::of("[fatal] Conversion failed!"), Severity::Error);
        assert_eq!(
            Severity::of("[rtp @ 0x1] [warning] Non-monotonous DTS"),
            Severity::Warn
        );
        assert_eq!(
            Severity::of("[h264 @ 0x1] [debug] nal_unit_type: 5"),
            Severity::Debug
        );
        assert_eq!(Severity::of("SDP:"), Severity::Info);
        // A tag quoted later in the message does not count over the real one.
        assert_eq!(
            Severity::of("[info] file named [error].mp4"),
            Severity::Info
        );
    }

    /// What FFmpeg prints for an output whose title is not English: a line
    /// over 96 bytes with a multi-byte character across byte 96.
    #[test]
    fn a_multibyte_character_across_the_tag_window_is_no_panic() {
        let mut line = String::from("[info]     title           : ");
        while line.len() < TAG_WITHIN - 1 {
            line.push('x');
        }
        line.push_str("Прямая трансляция с камеры на крыше");
        assert!(!line.is_char_boundary(TAG_WITHIN), "the test line is wrong");
        assert_eq!(Severity::of(&line), Severity::Info);
        let warn = format!("[warning] {}", "é".repeat(100));
        assert_eq!(Severity::of(&warn), Severity::Warn);
    }

    #[test]
    fn splits_lines_across_chunks_and_carriage_returns() {
        let mut s = LineSplitter::default();
        let mut lines = Vec::new();
        s.push(b"one\ntw", |l| lines.push(l));
        s.push(b"o\r\nthree\rfo", |l| lines.push(l));
        s.push(b"\xffur", |l| lines.push(l));
        s.finish(|l| lines.push(l));
        assert_eq!(lines, ["one", "two", "three", "fo\u{fffd}ur"]);
    }

    #[test]
    fn a_stream_without_newlines_is_cut_at_the_line_limit() {
        let mut s = LineSplitter::default();
        let mut lines = Vec::new();
        for _ in 0..100 {
            s.push(&[b'a'; 1000], |l| lines.push(l));
        }
        s.finish(|l| lines.push(l));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
    }

    /// Bytes biased toward what matters: newlines, tag brackets, UTF-8 lead
    /// and continuation bytes, and `=` for progress keys. (A map over plain
    /// bytes: a union strategy per byte is slow for long inputs.)
    fn ffmpeg_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        const SPECIAL: &[u8] = b"\n\r[]=\xd0\x9f\xe2\x80\xf0";
        proptest::collection::vec(any::<u16>(), len).prop_map(|v| {
            v.into_iter()
                .map(|x| match (x >> 8) as u8 {
                    0..=95 => SPECIAL[x as usize % SPECIAL.len()],
                    _ => x as u8,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Everything that reads FFmpeg's output, fed arbitrary bytes in
        /// arbitrary chunks: splitter, severity and progress never panic, and
        /// no line is empty or over the limit.
        #[test]
        fn any_output_is_read_without_panic(
            data in ffmpeg_bytes(0..(3 * MAX_LINE)),
            cuts in proptest::collection::vec(0usize..(3 * MAX_LINE), 0..16),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut splitter = LineSplitter::default();
            let mut progress = ProgressParser::default();
            let mut lines = Vec::new();
            let mut from = 0;
            for to in cuts {
                splitter.push(&data[from..to], |l| lines.push(l));
                from = to;
            }
            splitter.finish(|l| lines.push(l));
            for line in &lines {
                prop_assert!(!line.is_empty());
                prop_assert!(line.len() <= MAX_LINE * 3, "lossy decoding at most triples");
                let _ = Severity::of(line);
                let _ = progress.line(line);
            }
        }

        #[test]
        fn severity_of_any_text_never_panics(line in "\\PC{0,200}") {
            let _ = Severity::of(&line);
        }
    }
}
