//! The command line: clap definitions only, no I/O.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::profile::restart::parse_duration(s)
        .ok_or_else(|| format!("{s:?}: expected a duration such as 30s, 5m or 1.5"))
}

/// Seconds as a non-negative decimal number, e.g. `2.5`.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?}: expected a non-negative number of seconds"))
}

#[derive(Debug, Parser)]
#[command(
    name = "ffwhep",
    version,
    about = "Run FFmpeg and serve its output to WebRTC viewers over WHEP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr: `human` lines, or `json`, one object per line.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run streams: spawn FFmpeg and serve it over WHEP until the stream ends
    /// (FFmpeg exits and the restart policy does not start it again).
    Run(Box<RunArgs>),
    /// Print the FFmpeg command line `run` would spawn, shell-quoted, without spawning it.
    Args(ArgsArgs),
    /// Validate a profile and say OK or what is wrong.
    Check(ProfileArg),
    /// Run a profile with a built-in WHEP viewer and check that decodable video and
    /// audio arrive; print a one-line JSON summary. Exit 0 when they do.
    Smoke(SmokeArgs),
}

#[derive(Debug, Args)]
pub struct ProfileArg {
    /// The stream profile (YAML). Without it, the built-in test pattern (profiles/testsrc.yaml).
    pub profile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FfmpegArg {
    /// The FFmpeg executable: a path, or a name looked up on PATH.
    #[arg(long, env = "FFWHEP_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: OsString,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stream profiles (YAML), each run as its own stream on one HTTP server.
    /// Without any, the built-in test pattern (profiles/testsrc.yaml).
    pub profiles: Vec<PathBuf>,
    /// Stop cleanly (exit 0) after this long, e.g. `30s`, `5m`, `1.5`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub ffmpeg: FfmpegArg,
    /// HTTP address to serve WHEP on.
    #[arg(long, env = "FFWHEP_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Local UDP address for viewers' WebRTC traffic (repeatable; port 0 picks a free one;
    /// 0.0.0.0 means every non-loopback interface).
    #[arg(long = "ice-addr", default_values = ["0.0.0.0:0", "127.0.0.1:0"])]
    pub ice_addrs: Vec<SocketAddr>,
    /// Also offer ICE over TCP on this local address (repeatable; port 0 picks one per
    /// viewer), for viewers whose networks block UDP.
    #[arg(long = "ice-tcp-addr")]
    pub ice_tcp_addrs: Vec<SocketAddr>,
    /// Serve every viewer's WebRTC on this one UDP address (a concrete IP and a
    /// port, e.g. `192.0.2.10:8189`), instead of a port each.
    #[arg(long, value_parser = parse_mux_addr, conflicts_with = "udp_port_range")]
    pub udp_mux: Option<SocketAddr>,
    /// Give viewers' WebRTC sockets ports from this range, e.g. `40000-40999`
    /// (for a firewall), instead of ephemeral ones.
    #[arg(long, value_parser = parse_port_range)]
    pub udp_port_range: Option<(u16, u16)>,
    /// Seconds FFmpeg has to finish after SIGINT before it is killed.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub stop_grace: Duration,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A STUN or TURN server for ICE (repeatable), e.g. `stun:stun.example.org:3478`;
    /// also advertised to viewers in `Link` headers.
    #[arg(long = "ice-server")]
    pub ice_servers: Vec<String>,
    /// Username for the `turn:` servers.
    #[arg(long)]
    pub ice_username: Option<String>,
    /// Credential for the `turn:` servers.
    #[arg(long, env = "FFWHEP_ICE_CREDENTIAL", hide_env_values = true)]
    pub ice_credential: Option<String>,
    /// Public address a NAT maps 1:1 to this host (repeatable): candidates carry it
    /// instead of the local addresses.
    #[arg(long = "nat-ip")]
    pub nat_ips: Vec<std::net::IpAddr>,
    /// Origin allowed to call WHEP from a browser (repeatable); `*` allows any.
    #[arg(long = "cors-origin", default_values = ["*"])]
    pub cors_origins: Vec<String>,
    /// At most this many viewers of all streams together (503 beyond).
    #[arg(long)]
    pub max_viewers: Option<usize>,
    /// At most this many viewers being set up at once (503 beyond).
    #[arg(long, default_value_t = 16)]
    pub max_setups: usize,
    /// Media engine shards: tasks that each drive a share of the viewers'
    /// connections with their own sockets (default: one per CPU core).
    #[arg(long, value_parser = clap::value_parser!(usize))]
    pub shards: Option<usize>,
    /// The longest the answer waits for ICE gathering (STUN/TURN candidates), e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
    pub ice_gather_timeout: Duration,
    /// Drop a viewer whose ICE/DTLS is not up this long after the answer, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub setup_timeout: Duration,
    /// Bearer token for every stream without its own, and for /status and
    /// /metrics. Better given through the environment than on the command line.
    #[arg(
        long,
        env = "FFWHEP_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the global bearer token from this file.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Ask this HTTP service (an http:// URL) whether each viewer may watch,
    /// for every stream without `auth:` of its own (as a profile's `auth.url`).
    #[arg(long, env = "FFWHEP_AUTH_URL")]
    pub auth_url: Option<String>,
    /// How long that service may take to answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
    pub auth_timeout: Duration,
    /// No status line at the bottom of the terminal (there is none unless
    /// stderr is a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    #[command(flatten)]
    pub ffmpeg: FfmpegArg,
    /// Give up after this long, e.g. `20s`.
    #[arg(long, default_value = "20s", value_parser = parse_duration_arg)]
    pub timeout: Duration,
    /// Video frames to receive after the first keyframe.
    #[arg(long, default_value_t = 30)]
    pub frames: u64,
    /// Audio packets to receive (20 ms each for Opus from FFmpeg).
    #[arg(long, default_value_t = 25)]
    pub audio_packets: u64,
    /// The picture size the stream must have, e.g. `640x360`.
    #[arg(long, value_parser = parse_size)]
    pub expect_size: Option<(u32, u32)>,
    /// Local UDP address for WebRTC (repeatable; as for `run`). Default:
    /// loopback, for the built-in viewer; with `whip:` in the profile, also
    /// every non-loopback interface, for the pushes.
    #[arg(long = "ice-addr")]
    pub ice_addrs: Vec<SocketAddr>,
}

fn parse_mux_addr(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?}: expected IP:PORT, e.g. 192.0.2.10:8189"))?;
    if a.ip().is_unspecified() || a.port() == 0 {
        return Err(format!(
            "{s:?}: expected a concrete IP and port (they go into the candidates)"
        ));
    }
    Ok(a)
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?}: expected FIRST-LAST, e.g. 40000-40999");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 640x360"))?;
    match (w.parse(), h.parse()) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(format!("{s:?}: expected WIDTHxHEIGHT, e.g. 640x360")),
    }
}

#[derive(Debug, Args)]
pub struct ArgsArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    #[command(flatten)]
    pub ffmpeg: FfmpegArg,
    /// The video port V to show (audio is V+1). Without it, a pair free right now is used;
    /// `run` binds its own pair when it starts. 1 to 65534.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=65534))]
    pub port: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_and_refuse_nonsense() {
        assert_eq!(parse_secs("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
