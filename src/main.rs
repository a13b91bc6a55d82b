//! ffwhep: run FFmpeg and serve its output to WebRTC viewers over WHEP.

use clap::Parser;
use ffwhep::{app, cli};
use std::process::ExitCode;

/// Without RUST_LOG: ffwhep and FFmpeg at info; the WebRTC stack's per-viewer
/// chatter (state changes, handshake notes) only when it is a real problem.
const DEFAULT_LOG_FILTER: &str = "info,rtc=warn,rtc_ice=error,rtc_dtls=error,webrtc=warn";

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Json => logs
            .json()
            .with_span_list(true)
            .with_current_span(false)
            .init(),
        cli::LogFormat::Human => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match app::main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {failure:#}");
            ExitCode::from(failure.code())
        }
    }
}
