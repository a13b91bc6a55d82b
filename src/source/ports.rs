//! The adjacent loopback UDP ports: V for video, V+1 for audio, and for a
//! video ladder one more per extra rung (V+2, V+3, ...).
//!
//! Allocation *is* binding: the sockets handed back are the sources' own, so
//! nothing can take a port between allocation and FFmpeg's start.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// How many times a pair is tried before giving up.
pub const ALLOC_ATTEMPTS: usize = 10;

/// Bound sockets on 127.0.0.1: video on V, audio on V+1, the ladder's
/// other rungs after it.
#[derive(Debug)]
pub struct PortPair {
    pub video: UdpSocket,
    pub audio: UdpSocket,
    /// Rungs 1, 2, ... of a video ladder, on V+2, V+3, ...
    pub rungs: Vec<UdpSocket>,
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

/// No adjacent ports could be bound.
#[derive(Debug, thiserror::Error)]
#[error("no {count} adjacent free UDP ports on 127.0.0.1 after {attempts} attempts: {last}")]
pub struct AllocError {
    /// How many adjacent ports were wanted.
    pub count: &'static str,
    pub attempts: usize,
    #[source]
    pub last: io::Error,
}

/// Binds an ephemeral port V, then V+1 and `extra_rungs` more after it; if
/// one of those is taken (or past the last port), releases what it bound and
/// tries again, up to [`ALLOC_ATTEMPTS`] times.
pub fn allocate_ports(extra_rungs: usize) -> Result<PortPair, AllocError> {
    allocate_with(extra_rungs, || bind(0))
}

/// [`allocate_ports`] with the choice of V's socket left to `first`, so
/// tests can steer which V is tried.
pub fn allocate_with(
    extra_rungs: usize,
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
        match bind_after(v, 1 + extra_rungs) {
            Ok(mut after) => {
                let rungs = after.split_off(1);
                let audio = after.pop().expect("one port after V was bound");
                return Ok(PortPair {
                    video,
                    audio,
                    rungs,
                });
            }
            Err(e) => {
                tracing::debug!(attempt, video_port = v, error = %e, "a port after V is taken, retrying");
                last = e;
            }
        }
    }
    Err(AllocError {
        count: if extra_rungs == 0 { "two" } else { "enough" },
        attempts: ALLOC_ATTEMPTS,
        last,
    })
}

/// Binds the `n` ports after `v`, all or none.
fn bind_after(v: u16, n: usize) -> io::Result<Vec<UdpSocket>> {
    (1..=n)
        .map(|i| {
            let p = u16::try_from(i)
                .ok()
                .and_then(|i| v.checked_add(i))
                .ok_or_else(|| {
                    io::Error::other(format!("port {v} has no room for {n} ports above it"))
                })?;
            let what = if i == 1 {
                "audio".to_owned()
            } else {
                format!("rung {}", i - 1)
            };
            bind(p).map_err(|e| {
                io::Error::new(e.kind(), format!("port {p} ({what}, V+{i} of {v}): {e}"))
            })
        })
        .collect()
}

fn bind(port: u16) -> io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_adjacent_ports() {
        let pair = allocate_ports(0).unwrap();
        assert_eq!(pair.audio_port(), pair.video_port() + 1);
    }

    #[test]
    fn retries_when_v_plus_one_is_taken() {
        // Take a pair, keep V+1 busy, and offer that V first: the allocator
        // must give V back and succeed with the next candidate.
        let held = allocate_ports(0).unwrap();
        let busy_v = held.video_port();
        drop(held.video);
        let mut calls = 0;
        let pair = allocate_with(0, || {
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
        let held = allocate_ports(0).unwrap();
        let busy_v = held.video_port();
        drop(held.video);
        let mut calls = 0;
        let err = allocate_with(0, || {
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

    #[test]
    fn a_ladder_gets_one_more_adjacent_port_per_extra_rung() {
        let ports = allocate_ports(2).unwrap();
        let v = ports.video_port();
        assert_eq!(ports.audio_port(), v + 1);
        let rungs: Vec<u16> = ports.rungs.iter().map(port_of).collect();
        assert_eq!(rungs, [v + 2, v + 3]);
    }

    #[test]
    fn a_taken_rung_port_releases_the_others_and_retries() {
        let held = allocate_ports(2).unwrap();
        let busy_v = held.video_port();
        drop(held.video);
        drop(held.audio);
        let mut calls = 0;
        let ports = allocate_with(2, || {
            calls += 1;
            if calls == 1 { bind(busy_v) } else { bind(0) }
        })
        .unwrap();
        assert!(calls >= 2);
        assert_ne!(ports.video_port(), busy_v);
        drop(ports);
        // V and V+1 were given back when V+3 turned out busy.
        bind(busy_v).expect("V was not released");
        bind(busy_v + 1).expect("V+1 was not released");
        drop(held.rungs);
    }
}
