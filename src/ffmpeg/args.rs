//! Building FFmpeg's argv from a plan and a port pair: pure functions, no I/O.
//!
//! Order: ffwhep's own global options, the profile's global options, the
//! inputs, the ladder's filter graph (one decode, then `split` and `scale`
//! per rung), the profile's own outputs, then one RTP output leg per media
//! kind (per rung for a laddered video leg).

use crate::profile::{Io, LegPlan, MediaKind, Plan};

/// Largest RTP packet FFmpeg may send; WebRTC wants at most 1200 bytes.
pub const RTP_PACKET_SIZE: u16 = 1200;

/// The loopback ports the legs send to: video on `video`, audio on `video + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegPorts {
    pub video: u16,
    pub audio: u16,
}

impl LegPorts {
    /// The port of ladder rung `k`: the video port for the first, then
    /// those after the audio port (V+2, V+3, ...).
    pub fn rung(&self, k: usize) -> u16 {
        if k == 0 {
            self.video
        } else {
            self.audio.saturating_add(k as u16)
        }
    }
}

/// Options ffwhep always gives FFmpeg: no banner, never read the terminal,
/// progress as `key=value` blocks on stdout each second instead of `\r`
/// lines, and a `[level]` tag on every log line so each can be logged at its
/// own severity.
fn own_globals(profile_globals: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-progress",
        "pipe:1",
        "-stats_period",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let sets_level = profile_globals
        .iter()
        .any(|o| o == "-loglevel" || o == "-v");
    if !sets_level {
        v.extend(["-loglevel".to_owned(), "level+info".to_owned()]);
    }
    v
}

/// The RTP URL of a leg: loopback, at most 1200-byte packets, and RTCP sent
/// to the leg's own port (FFmpeg's default, port + 1, would put the video
/// leg's sender reports on the audio port).
pub fn rtp_url(port: u16) -> String {
    format!("rtp://127.0.0.1:{port}?pkt_size={RTP_PACKET_SIZE}&rtcpport={port}")
}

/// One injected RTP output: `-map`, codec options, RTP muxer options, URL.
pub fn rtp_leg(leg: &LegPlan, ports: LegPorts) -> Io {
    let port = match leg.kind {
        MediaKind::Video => ports.video,
        MediaKind::Audio => ports.audio,
    };
    let mut options = vec!["-map".to_owned(), leg.map.clone()];
    options.extend(leg.codec_args.iter().cloned());
    options.extend([
        "-f".to_owned(),
        "rtp".to_owned(),
        "-payload_type".to_owned(),
        leg.payload_type.to_string(),
        "-ssrc".to_owned(),
        leg.ssrc.to_string(),
    ]);
    Io {
        address: rtp_url(port),
        options,
    }
}

/// The RTP legs of a plan, video first (each rung of its ladder, from the
/// best down); a leg the profile disabled is absent.
pub fn rtp_legs(plan: &Plan, ports: LegPorts) -> Vec<Io> {
    let mut legs = Vec::new();
    if let Some(video) = &plan.video {
        if video.rungs.is_empty() {
            legs.push(rtp_leg(video, ports));
        }
        for (k, r) in video.rungs.iter().enumerate() {
            let rung = LegPlan {
                map: if r.scaled {
                    rung_label(k)
                } else {
                    video.map.clone()
                },
                codec_args: r.codec_args.clone(),
                ssrc: r.ssrc,
                rungs: Vec::new(),
                ..video.clone()
            };
            let port = ports.rung(k);
            legs.push(rtp_leg(
                &rung,
                LegPorts {
                    video: port,
                    ..ports
                },
            ));
        }
    }
    legs.extend(plan.audio.iter().map(|l| rtp_leg(l, ports)));
    legs
}

/// The filter graph's output for scaled rung `k`.
fn rung_label(k: usize) -> String {
    format!("[r{k}]")
}

/// The ladder's filter graph: the video leg's input decoded once, split
/// into one branch per scaled rung, each scaled to its height (the width
/// follows the aspect ratio, rounded to even) and, if the rung says so,
/// its frame rate. None without scaled rungs.
pub fn ladder_filter(plan: &Plan) -> Option<String> {
    let leg = plan.video.as_ref()?;
    let scaled: Vec<_> = leg
        .rungs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.scaled)
        .collect();
    if scaled.is_empty() {
        return None;
    }
    let input = format!("[{}]", leg.map);
    let mut chains = Vec::new();
    let heads = if scaled.len() == 1 {
        vec![input]
    } else {
        let labels: Vec<String> = scaled.iter().map(|(k, _)| format!("[s{k}]")).collect();
        chains.push(format!("{input}split={}{}", scaled.len(), labels.concat()));
        labels
    };
    for ((k, r), head) in scaled.iter().zip(heads) {
        let mut chain = format!("{head}scale=-2:{}", r.rung.height);
        if let Some(fps) = r.rung.fps {
            chain.push_str(&format!(",fps={fps}"));
        }
        chain.push_str(&rung_label(*k));
        chains.push(chain);
    }
    Some(chains.join(";"))
}

/// The full argv after the program name.
pub fn build(plan: &Plan, ports: LegPorts) -> Vec<String> {
    let mut argv = own_globals(&plan.global_options);
    argv.extend(plan.global_options.iter().cloned());
    for input in &plan.inputs {
        argv.extend(input.options.iter().cloned());
        argv.push("-i".to_owned());
        argv.push(input.address.clone());
    }
    if let Some(graph) = ladder_filter(plan) {
        argv.extend(["-filter_complex".to_owned(), graph]);
    }
    for output in plan.outputs.iter().chain(&rtp_legs(plan, ports)) {
        argv.extend(output.options.iter().cloned());
        argv.push(output.address.clone());
    }
    argv
}

/// Shell-quotes a program and its argv into one line a shell would run as is.
pub fn shell_line(program: &str, argv: &[String]) -> String {
    std::iter::once(program)
        .chain(argv.iter().map(String::as_str))
        .map(|a| shlex::try_quote(a).map_or_else(|_| format!("{a:?}"), |q| q.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
