//! What one `rtc` sans-IO core holds in memory as ffwhep's sender side of a
//! viewer: N pairs are connected in memory (`benches/support/pairs.rs`),
//! each sender sends 2,000 packets, the receivers are dropped, and the live
//! heap (counted by this program's allocator) is divided by N.
//!
//! usage: cargo run --release --example rtc-core-memory [N] [plain|reports] [shared]
//! (`plain`: no report interceptors; `shared`: the senders share one DTLS
//! certificate, as ffwhep's connections do, instead of one each)

#[path = "../benches/support/pairs.rs"]
mod pairs;

use bytes::Bytes;
use pairs::{PAYLOAD_BYTES, Pair};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Instant;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let reports = args.next().as_deref() != Some("plain");
    let shared = (args.next().as_deref() == Some("shared")).then(pairs::certificate);
    let before = LIVE.load(Relaxed);
    let mut pairs: Vec<Pair> = (0..n)
        .map(|i| Pair::connect_with(i, reports, shared.clone()))
        .collect();
    let payload = Bytes::from(vec![0x41u8; PAYLOAD_BYTES]);
    for _ in 0..2000 {
        for p in &mut pairs {
            p.send(&payload, Instant::now());
        }
    }
    let senders: Vec<_> = pairs.into_iter().map(|p| p.sender).collect();
    let per_core = (LIVE.load(Relaxed) - before) / i64::from(n);
    println!(
        "{} sender cores ({}, {}): {} KB of live heap each",
        senders.len(),
        if reports {
            "report interceptors"
        } else {
            "no interceptors"
        },
        if shared.is_some() {
            "one shared certificate"
        } else {
            "a certificate each"
        },
        per_core / 1024
    );
}
