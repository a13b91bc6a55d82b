//! The adjacent loopback UDP port pair: V for video, V+1 for audio.
//!
//! Allocation *is* binding: the sockets handed back are the sources' own, so
//! nothing can take a port between allocation and FFmpeg's start.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// How many times a pair is tried before giving up.
pub const ALLOC_ATTEMPTS: usize = 10;

/// Two bound sockets on 127.0.0.1: video on V, audio on V+1.
#[derive(Debug)]
pub struct PortPair {
    pub video: UdpSocket,
    pub audio: UdpSocket,
}

impl PortPair {
    /// V, the video port; audio is on V+1.
    pub fn video_port(&self) -> u16 {
        port_of(&self.video)
    }

    pub fn audio_port(&self) -> u16 {
        port_of(&self.audio)
    }
}

fn port_of(s: &UdpSocket) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// No adjacent pair could be bound.
#[derive(Debug, thiserror::Error)]
#[error("no two adjacent free UDP ports on 127.0.0.1 after {attempts} attempts: {last}")]
pub struct AllocError {
    pub attempts: usize,
    #[source]
    pub last: io::Error,
}

/// Binds an ephemeral port V and then V+1; if V+1 is taken (or V is the
/// last port), releases V and tries again, up to [`ALLOC_ATTEMPTS`] times.
pub fn allocate_pair() -> Result<PortPair, AllocError> {
    allocate_pair_with(|| bind(0))
}

/// [`allocate_pair`] with the choice of V's socket left to `first`, so tests
/// can steer which V is tried.
pub fn allocate_pair_with(
    mut first: impl FnMut() -> io::Result<UdpSocket>,
) -> Result<PortPair, AllocError> {
    let mut last = io::Error::other("no attempt made");
    for attempt in 1..=ALLOC_ATTEMPTS {
        let video = match first() {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let v = port_of(&video);
        let Some(a) = v.checked_add(1) else {
            last = io::Error::other(format!("port {v} has no neighbour above it"));
            continue;
        };
        match bind(a) {
            Ok(audio) => return Ok(PortPair { video, audio }),
            Err(e) => {
                tracing::debug!(attempt, video_port = v, audio_port = a, error = %e, "audio port taken, retrying");
                last = io::Error::new(e.kind(), format!("port {a} (audio, V+1 of {v}): {e}"));
            }
        }
    }
    Err(AllocError {
        attempts: ALLOC_ATTEMPTS,
        last,
    })
}

fn bind(port: u16) -> io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_adjacent_ports() {
        let pair = allocate_pair().unwrap();
        assert_eq!(pair.audio_port(), pair.video_port() + 1);
    }

    #[test]
    fn retries_when_v_plus_one_is_taken() {
        // Take a pair, keep V+1 busy, and offer that V first: the allocator
        // must give V back and succeed with the next candidate.
        let held = allocate_pair().unwrap();
        let busy_v = held.video_port();
        drop(held.video);
        let mut calls = 0;
        let pair = allocate_pair_with(|| {
            calls += 1;
            if calls == 1 { bind(busy_v) } else { bind(0) }
        })
        .unwrap();
        assert!(calls >= 2, "the busy pair was not retried");
        assert_ne!(pair.video_port(), busy_v);
        assert_eq!(pair.audio_port(), pair.video_port() + 1);
        // V was released when its neighbour turned out busy.
        drop(pair);
        bind(busy_v).expect("V was not released after the failed attempt");
    }

    #[test]
    fn gives_up_after_ten_attempts_with_the_last_cause() {
        let held = allocate_pair().unwrap();
        let busy_v = held.video_port();
        drop(held.video);
        let mut calls = 0;
        let err = allocate_pair_with(|| {
            calls += 1;
            bind(busy_v)
        })
        .unwrap_err();
        assert_eq!(calls, ALLOC_ATTEMPTS);
        let msg = err.to_string();
        assert!(msg.contains("after 10 attempts"), "{msg}");
        assert!(msg.contains(&format!("port {}", busy_v + 1)), "{msg}");
        assert_eq!(err.last.kind(), io::ErrorKind::AddrInUse);
    }
}
