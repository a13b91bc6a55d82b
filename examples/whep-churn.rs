//! Churn for the leak check: keeps `steady` viewers connected while `cycles`
//! more join (POST, connect, receive), then leave (DELETE), one after another.
//! Prints what the steady viewers lost and how long the joins took.
//!
//! usage: cargo run --release --example whep-churn -- URL STEADY CYCLES

use ffwhep::smoke::viewer::Viewer;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, steady, cycles] = &args[..] else {
        anyhow::bail!("usage: whep-churn URL STEADY CYCLES");
    };
    let (steady, cycles): (usize, usize) = (steady.parse()?, cycles.parse()?);
    let base = url.split("/whep/").next().unwrap_or_default().to_owned();
    let mut viewers = Vec::new();
    for _ in 0..steady {
        viewers.push(Viewer::connect(url).await?);
    }
    println!("steady {steady}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut failures = 0;
    for i in 0..cycles {
        match Viewer::connect(url).await {
            Ok(v) => {
                let got = v
                    .wait_until(Duration::from_secs(5), |r| r.video.packets > 5)
                    .await;
                failures += usize::from(!got);
                let _ = http.delete(format!("{base}{}", v.location)).send().await;
                v.close().await;
            }
            Err(e) => {
                failures += 1;
                eprintln!("join {i} failed: {e:#}");
            }
        }
        if (i + 1) % 100 == 0 {
            println!("cycles {}", i + 1);
        }
    }
    let per_join = started.elapsed() / cycles.max(1) as u32;
    // What the steady viewers missed: packets never received (sequence
    // gaps), and frames not received whole (of those they saw the end of).
    let (mut lost, mut frames, mut broken) = (0, u64::MAX, 0);
    for v in &viewers {
        let r = v.received();
        lost += r.video.lost + r.audio.lost;
        frames = frames.min(r.frames_since_idr);
        let ends = r
            .video_packets
            .values()
            .filter(|(_, marker)| *marker)
            .count() as u64;
        broken += ends.saturating_sub(1).saturating_sub(r.complete_frames());
    }
    println!(
        "done cycles={cycles} failures={failures} per_join_ms={} steady_lost={lost} steady_broken_frames={broken} steady_min_frames={frames}",
        per_join.as_millis()
    );
    for v in &viewers {
        v.close().await;
    }
    Ok(())
}
