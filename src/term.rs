//! The one-line status shown at the bottom of a terminal while `ffwhep run`
//! works: log lines are written above it, so it never breaks them. Only used
//! when stderr is a terminal (and not with `--quiet` or JSON logs).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

/// The status line on stderr, as `run` shows it.
pub(crate) type Term = Arc<StatusLine<std::io::Stderr>>;

/// Erases the current terminal line and returns to its start.
const CLEAR: &[u8] = b"\r\x1b[2K";

/// The status line and the sink it shares with the log.
pub struct StatusLine<W: Write + Send> {
    inner: Mutex<(W, String)>,
}

impl<W: Write + Send> StatusLine<W> {
    pub fn new(sink: W) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new((sink, String::new())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (W, String)> {
        // Writes cannot leave the pair inconsistent; a poisoned lock is fine.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the status line (one line; newlines become spaces).
    pub fn set(&self, line: &str) {
        let mut g = self.lock();
        let (sink, current) = &mut *g;
        *current = line.replace(['\n', '\r'], " ");
        let _ = sink.write_all(CLEAR);
        let _ = sink.write_all(current.as_bytes());
        let _ = sink.flush();
    }

    /// Removes the status line for good.
    pub fn clear(&self) {
        let mut g = self.lock();
        let (sink, current) = &mut *g;
        if !current.is_empty() {
            current.clear();
            let _ = sink.write_all(CLEAR);
            let _ = sink.flush();
        }
    }

    /// Writes a log record above the status line, then redraws it.
    fn write_record(&self, record: &[u8]) -> io::Result<()> {
        let mut g = self.lock();
        let (sink, current) = &mut *g;
        if current.is_empty() {
            return sink.write_all(record);
        }
        sink.write_all(CLEAR)?;
        sink.write_all(record)?;
        sink.write_all(current.as_bytes())?;
        sink.flush()
    }
}

/// A log writer that keeps the status line below the records.
pub struct LogWriter<W: Write + Send + 'static>(pub Arc<StatusLine<W>>);

impl<W: Write + Send + 'static> Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_record(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_go_above_the_status_line() {
        let sink = Sink::default();
        let status = StatusLine::new(sink.clone());
        let mut log = LogWriter(status.clone());
        log.write_all(b"first\n").unwrap();
        status.set("cam: running 30 fps");
        log.write_all(b"second\n").unwrap();
        status.clear();
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out,
            "first\n\r\x1b[2Kcam: running 30 fps\r\x1b[2Ksecond\ncam: running 30 fps\r\x1b[2K"
        );
    }
}
