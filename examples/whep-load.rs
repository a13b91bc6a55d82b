//! Load generator for benchmarks: connects N viewers (the built-in webrtc-rs
//! viewer) to a WHEP URL, holds them for a while, and prints what each
//! received. Counts packets, does not decode. Used by scripts/bench-viewers.
//!
//! usage: cargo run --release --example whep-load -- URL N SECONDS

use ffwhep::smoke::viewer::Viewer;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, n, secs] = &args[..] else {
        anyhow::bail!("usage: whep-load URL N SECONDS");
    };
    let (n, secs): (usize, f64) = (n.parse()?, secs.parse()?);
    let mut viewers = Vec::new();
    for _ in 0..n {
        viewers.push(Viewer::connect(url).await?);
    }
    println!("connected {n}");
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    for (i, v) in viewers.iter().enumerate() {
        let r = v.received();
        println!(
            "viewer {i}: video_packets={} audio_packets={}",
            r.video.packets, r.audio.packets
        );
        v.close().await;
    }
    Ok(())
}
