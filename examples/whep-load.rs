#![allow(dead_code)]
//! Load generator for benchmarks: connects N webrtc-rs viewers to a WHEP URL,
//! holds them for a while, and prints what each received. Counts packets,
//! does not decode. Used by scripts/bench-viewers.
//!
//! usage: cargo run --release --example whep-load -- URL N SECONDS

#[path = "../tests/common/viewer.rs"]
mod viewer;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, n, secs) = match &args[..] {
        [_, url, n, secs] => (
            url.clone(),
            n.parse::<usize>().unwrap(),
            secs.parse::<f64>().unwrap(),
        ),
        _ => {
            eprintln!("usage: whep-load URL N SECONDS");
            std::process::exit(2);
        }
    };
    let mut viewers = Vec::new();
    for _ in 0..n {
        viewers.push(viewer::Viewer::connect(&url).await);
    }
    println!("connected {n}");
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    for (i, v) in viewers.iter().enumerate() {
        let r = v.received();
        println!(
            "viewer {i}: video_packets={} audio_packets={}",
            r.video_packets, r.audio_packets
        );
        v.close().await;
    }
}
