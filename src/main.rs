//! ffwhep: run FFmpeg and serve its output to WebRTC viewers over WHEP.


use clap::Parser;
use ffwhep::{app, cli};

/// Without RUST_LOG: ffwhep and FFmpeg at info; the WebRTC stack's per-viewer
/// chatter (state changes, handshake notes) only when it is a real problem.
const DEFAULT_LOG_FILTER: &str = "info,rtc=warn,rtc_ice=error,rtc_dtls=error,webrtc=warn";
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match app::main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {failure:#}");
            ExitCode::from(failure.code())
        }
    }
}
