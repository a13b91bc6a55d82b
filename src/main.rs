//! ffwhep: run FFmpeg and serve its output to WebRTC viewers over WHEP.

use clap::Parser;
use ffwhep::{app, cli, term};
use std::process::ExitCode;

/// Without RUST_LOG: ffwhep and FFmpeg at info; the WebRTC stack's per-viewer
/// chatter (state changes, handshake notes) only when it is a real problem.
const DEFAULT_LOG_FILTER: &str = "info,rtc=warn,rtc_ice=error,rtc_dtls=error,webrtc=warn";

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    // A terminal gets a status line under the log while `run` works.
    let status_line = match &cli.command {
        cli::Command::Run(r) if tty && !r.quiet && cli.log_format == cli::LogFormat::Human => {
            Some(term::StatusLine::new(std::io::stderr()))
        }
        _ => None,
    };
    match (cli.log_format, &status_line) {
        (cli::LogFormat::Json, _) => logs
            .with_writer(std::io::stderr)
            .json()
            .with_span_list(true)
            .with_current_span(false)
            .init(),
        (cli::LogFormat::Human, Some(line)) => {
            let line = line.clone();
            logs.with_writer(move || term::LogWriter(line.clone()))
                .with_ansi(true)
                .init()
        }
        (cli::LogFormat::Human, None) => logs.with_writer(std::io::stderr).with_ansi(tty).init(),
    }
    match app::main(cli, status_line) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {failure:#}");
            ExitCode::from(failure.code())
        }
    }
}
