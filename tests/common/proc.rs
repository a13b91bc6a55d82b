//! A helper process of a test (an SFU, a receiver): its output lines as
//! they come, waited on; killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Output lines as they arrive, and whether the output has ended.
#[derive(Default)]
pub struct Lines {
    state: Mutex<(String, bool)>,
    changed: Condvar,
}

impl Lines {
    pub fn push(&self, line: &str) {
        let mut st = self.state.lock().unwrap();
        st.0.push_str(line);
        st.0.push('\n');
        self.changed.notify_all();
    }

    pub fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    pub fn text(&self) -> String {
        self.state.lock().unwrap().0.clone()
    }

    /// Waits until `f` holds for the text or the output has ended, at most
    /// `within`; returns whether `f` held.
    pub fn wait(&self, within: Duration, f: impl Fn(&str) -> bool) -> bool {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, within, |(text, ended)| !f(text) && !*ended)
            .unwrap();
        f(&st.0)
    }

    /// Waits until the output has ended, at most `within`.
    pub fn wait_end(&self, within: Duration) -> bool {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, within, |(_, ended)| !*ended)
            .unwrap();
        st.1
    }
}

/// A running helper and its output (stdout and stderr together).
pub struct Proc {
    pub name: String,
    child: Child,
    pub lines: Arc<Lines>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new(Lines::default());
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let pipes: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for pipe in pipes {
            let (sink, open) = (lines.clone(), open.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.push(&line);
                }
                if open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                    sink.close();
                }
            });
        }
        Proc {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// Waits until `f` holds for its output; panics after `within`.
    pub fn wait_line(&self, within: Duration, what: &str, f: impl Fn(&str) -> bool) {
        assert!(
            self.lines.wait(within, f),
            "timed out waiting for {what} from {}; its output:\n{}",
            self.name,
            self.lines.text()
        );
    }

    /// Waits for it to exit (its output ends); panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        if !self.lines.wait_end(within) {
            let _ = self.child.kill();
            panic!(
                "{} did not exit within {within:?}; its output:\n{}",
                self.name,
                self.lines.text()
            );
        }
        self.child.wait().unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
