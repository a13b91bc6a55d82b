//! Tracing setup: human or JSON lines on stderr, filtered by `RUST_LOG`, and
//! under `run` on a terminal a status line kept below the log.

use crate::cli::{Cli, Command, LogFormat};
use crate::term::{LogWriter, StatusLine, Term};

/// Without RUST_LOG: ffwhep and FFmpeg at info; the WebRTC stack's per-viewer
/// chatter (state changes, handshake notes) only when it is a real problem.
const DEFAULT_LOG_FILTER: &str = "info,rtc=warn,rtc_ice=error,rtc_dtls=error,webrtc=warn";

/// Installs the global subscriber; returns the status line when `run` shows one.
pub(crate) fn init(cli: &Cli) -> Option<Term> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    let status_line = match &cli.command {
        Command::Run(r) if tty && !r.quiet && cli.log_format == LogFormat::Human => {
            Some(StatusLine::new(std::io::stderr()))
        }
        _ => None,
    };
    match (cli.log_format, &status_line) {
        (LogFormat::Json, _) => logs
            .with_writer(std::io::stderr)
            .json()
            .with_span_list(true)
            .with_current_span(false)
            .init(),
        (LogFormat::Human, Some(line)) => {
            let line = line.clone();
            logs.with_writer(move || LogWriter(line.clone()))
                .with_ansi(true)
                .init()
        }
        (LogFormat::Human, None) => logs.with_writer(std::io::stderr).with_ansi(tty).init(),
    }
    status_line
}
