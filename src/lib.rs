//! ffwhep: run FFmpeg and serve its output to WebRTC viewers over WHEP.
//!
//! Layers, bottom up (each imports only those below it):
//! - plain data and pure parsing: `profile` (the typed plan), `auth`, `rtp`,
//!   `h264`, `latency`, `sdp` (offers, trickle fragments, candidates);
//! - `ffmpeg` (argv, output lines, progress, the supervisor) and `source` (the
//!   port pair, RTP in, GOP cache, shared history): nothing of WebRTC or HTTP;
//! - `exit`: every failure and the exit code it maps to;
//! - `engine`: the media engine: shards that drive the viewers' WebRTC
//!   connections (`rtc` sans-IO cores), fed from the sources;
//! - `stream`: one stream's lifecycle and the registry of every stream;
//! - `http`: the router, WHEP, pages, status and metrics;
//! - `cli` (the command line), `app` (the commands), `logging` and `term`,
//!   and `smoke` (the built-in viewer that checks a profile).

mod admission;
mod app;
mod auth;
mod cli;
mod engine;
mod exit;
mod ffmpeg;
pub mod h264;
mod hooks;
mod http;
mod latency;
mod logging;
mod outbound;
pub mod profile;
pub mod rtp;
pub mod sdp;
pub mod smoke;
mod snapshot;
mod source;
mod stream;
mod term;
mod whip;

use clap::Parser;
use std::process::ExitCode;

/// The whole command line program: parse, set up logging, run the command,
/// print the error chain once, and return the exit code decided in `exit`.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let status_line = logging::init(&cli);
    match app::main(cli, status_line) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {failure:#}");
            ExitCode::from(failure.code())
        }
    }
}
