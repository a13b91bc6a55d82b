//! Building FFmpeg's argv from a plan and a port pair: pure functions, no I/O.
//!
//! Order: ffwhep's own global options, the profile's global options, the
//! inputs, the profile's own outputs, then one RTP output leg per media kind.

use crate::profile::{Io, LegPlan, MediaKind, Plan};

/// Largest RTP packet FFmpeg may send; WebRTC wants at most 1200 bytes.
pub const RTP_PACKET_SIZE: u16 = 1200;

/// The loopback ports the legs send to: video on `video`, audio on `video + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegPorts {
    pub video: u16,
    pub audio: u16,
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

/// The RTP legs of a plan, video first; a leg the profile disabled is absent.
pub fn rtp_legs(plan: &Plan, ports: LegPorts) -> Vec<Io> {
    [&plan.video, &plan.audio]
        .into_iter()
        .flatten()
        .map(|l| rtp_leg(l, ports))
        .collect()
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
