//! A lossy UDP shim between one WebRTC viewer and the server, for loss
//! repair tests: the viewer's candidates and the server's are rewritten in
//! the SDP to the shim's two ports, which relay both ways and drop a share
//! of the server's SRTP/SRTCP packets (never STUN or DTLS, so the connection
//! itself comes up).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

pub struct Shim {
    /// Faces the server: the viewer's candidate in the offer becomes this.
    pub toward_server: UdpSocket,
    /// Faces the viewer: the server's candidate in the answer becomes this.
    pub toward_viewer: UdpSocket,
    pub dropped: Arc<AtomicU64>,
    pub passed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Rewrites the address and port of every `a=candidate` line to `to`, and
/// returns the first original address.
pub fn rewrite_candidates(sdp: &str, to: SocketAddr) -> (String, Option<SocketAddr>) {
    let mut first = None;
    let lines: Vec<String> = sdp
        .lines()
        .map(|l| {
            let Some(rest) = l.strip_prefix("a=candidate:") else {
                return l.to_owned();
            };
            let mut f: Vec<String> = rest.split(' ').map(str::to_owned).collect();
            if f.len() > 5 {
                if first.is_none() {
                    first = format!("{}:{}", f[4], f[5]).parse().ok();
                }
                f[4] = to.ip().to_string();
                f[5] = to.port().to_string();
            }
            format!("a=candidate:{}", f.join(" "))
        })
        .collect();
    (lines.join("\r\n") + "\r\n", first)
}

impl Shim {
    pub fn new() -> Self {
        let bind = || UdpSocket::bind("127.0.0.1:0").unwrap();
        Self {
            toward_server: bind(),
            toward_viewer: bind(),
            dropped: Arc::default(),
            passed: Arc::default(),
            stop: Arc::default(),
        }
    }

    pub fn server_side(&self) -> SocketAddr {
        self.toward_server.local_addr().unwrap()
    }

    pub fn viewer_side(&self) -> SocketAddr {
        self.toward_viewer.local_addr().unwrap()
    }

    /// Relays between `viewer` and `server`, dropping `loss` (0 to 1) of
    /// the server's media packets, pseudo-randomly but repeatably.
    pub fn start(&self, viewer: SocketAddr, server: SocketAddr, loss: f64) {
        let (a, b) = (
            self.toward_server.try_clone().unwrap(),
            self.toward_viewer.try_clone().unwrap(),
        );
        let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        for s in [&a, &b] {
            s.set_read_timeout(Some(std::time::Duration::from_millis(100)))
                .unwrap();
        }
        let (stop, dropped, passed) =
            (self.stop.clone(), self.dropped.clone(), self.passed.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            while !stop.load(Relaxed) {
                let Ok((n, _)) = a.recv_from(&mut buf) else {
                    continue;
                };
                // SRTP and SRTCP start with version 2 (first byte 128..=191).
                let media = (128..=191).contains(&buf[0]);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if media && ((x % 10_000) as f64) < loss * 10_000.0 {
                    dropped.fetch_add(1, Relaxed);
                    continue;
                }
                passed.fetch_add(1, Relaxed);
                let _ = b.send_to(&buf[..n], viewer);
            }
        });
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Relaxed) {
                let Ok((n, _)) = b2.recv_from(&mut buf) else {
                    continue;
                };
                let _ = a2.send_to(&buf[..n], server);
            }
        });
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}
