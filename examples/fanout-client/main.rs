//! Load client for scripts/bench-fanout: connects N viewers to one relay
//! (ffwhep over WHEP, or Janus's streaming plugin over its HTTP API), holds
//! them through a steady window and prints one JSON line: the relay's CPU,
//! memory and threads over the window (from /proc), this client's own CPU,
//! what each viewer received against what the reference tap saw, and the
//! hop time of sampled packets (tap arrival to viewer arrival). With
//! `--metrics`, also ffwhep's own relay-latency histogram over the window.
//!
//! usage: fanout-client whep URL | janus URL MOUNTPOINT
//!          --pid PID --viewers N [--window SECS] [--tap PORT] [--metrics URL]
//!          [--name NAME]

mod janus;
mod procfs;
mod tap;
mod viewer;

use anyhow::{Context, bail};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tap::Tap;
use viewer::Viewer;

/// Viewers being set up at once.
const CONNECT_CONCURRENCY: usize = 4;

struct Args {
    relay: Relay,
    pid: u32,
    viewers: usize,
    window: f64,
    tap_port: u16,
    metrics: Option<String>,
    /// The relay's name in the output, when not its kind's.
    name: Option<String>,
}

#[derive(Clone)]
enum Relay {
    Whep(String),
    Janus(String, u64),
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = std::env::args().skip(1);
    let relay = match a.next().as_deref() {
        Some("whep") => Relay::Whep(a.next().context("whep URL")?),
        Some("janus") => Relay::Janus(
            a.next().context("janus URL")?,
            a.next().context("janus MOUNTPOINT")?.parse()?,
        ),
        _ => bail!(
            "usage: fanout-client whep URL | janus URL MOUNTPOINT --pid PID --viewers N [--window SECS] [--tap PORT] [--metrics URL] [--name NAME]"
        ),
    };
    let mut args = Args {
        relay,
        pid: 0,
        viewers: 1,
        window: 10.0,
        tap_port: 20104,
        metrics: None,
        name: None,
    };
    while let Some(flag) = a.next() {
        let value = a.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pid" => args.pid = value.parse()?,
            "--viewers" => args.viewers = value.parse()?,
            "--window" => args.window = value.parse()?,
            "--tap" => args.tap_port = value.parse()?,
            "--metrics" => args.metrics = Some(value),
            "--name" => args.name = Some(value),
            _ => bail!("unknown option {flag}"),
        }
    }
    if args.pid == 0 {
        bail!("--pid of the relay is required");
    }
    Ok(args)
}

async fn connect_all(args: &Args, http: &reqwest::Client, tap: &Arc<Tap>) -> (Vec<Viewer>, usize) {
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut joins = tokio::task::JoinSet::new();
    for _ in 0..args.viewers {
        let (gate, http, tap, relay) =
            (gate.clone(), http.clone(), tap.clone(), args.relay.clone());
        joins.spawn(async move {
            let _permit = gate.acquire_owned().await;
            match &relay {
                Relay::Whep(url) => Viewer::whep(&http, url, tap).await,
                Relay::Janus(url, id) => Viewer::janus(&http, url, *id, tap).await,
            }
        });
    }
    let (mut viewers, mut failed) = (Vec::new(), 0);
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok(v)) => viewers.push(v),
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("a viewer failed to connect: {e:#}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("a viewer task failed: {e}");
            }
        }
    }
    (viewers, failed)
}

/// The cumulative buckets of `ffwhep_relay_latency_seconds` (bound, count).
async fn latency_buckets(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = http.get(url).send().await?.text().await?;
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("ffwhep_relay_latency_seconds_bucket{") else {
            continue;
        };
        let le = rest.split("le=\"").nth(1).and_then(|s| s.split('"').next());
        let count = rest.rsplit(' ').next().and_then(|c| c.parse().ok());
        if let (Some(le), Some(count)) = (le, count) {
            buckets.push((le.parse().unwrap_or(f64::INFINITY), count));
        }
    }
    Ok(buckets)
}

/// The bound (ms) at or below which a share `q` of the window's samples lie.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|(&(le, a), &(_, b))| (le, a - b))
        .collect();
    let total = diff.last()?.1;
    // Beyond the last finite bound the answer is only "more than" it:
    // reported as twice that bound, never as infinity (JSON has none); the
    // output's `relay_latency_top_ms` says which bound that was.
    let last_finite = diff.iter().rev().find(|(le, _)| le.is_finite())?.0;
    (total > 0.0).then(|| {
        diff.iter().find(|(_, c)| *c >= q * total).map(|&(le, _)| {
            1000.0
                * if le.is_finite() {
                    le
                } else {
                    2.0 * last_finite
                }
        })
    })?
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // No pooled connections: a server may close an idle one just as it is
    // reused (ffwhep closes them after its 10 s header timeout).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let tap = Arc::new(Tap::default());
    tap.listen(args.tap_port)
        .await
        .context("binding the tap ports")?;
    let (rss_before, _) = procfs::rss_and_threads(args.pid)?;

    let t_connect = Instant::now();
    let (viewers, failed) = connect_all(&args, &http, &tap).await;
    let connect_s = t_connect.elapsed().as_secs_f64();
    eprintln!(
        "connected {} of {} in {connect_s:.1} s",
        viewers.len(),
        args.viewers
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // settle

    let snap = |viewers: &[Viewer]| -> Vec<[(u64, u64); 2]> {
        viewers
            .iter()
            .map(|v| {
                [0, 1].map(|k| {
                    (
                        v.counts[k].packets.load(Relaxed),
                        v.counts[k].expected.load(Relaxed),
                    )
                })
            })
            .collect()
    };
    let lat0 = match &args.metrics {
        Some(u) => Some(latency_buckets(&http, u).await?),
        None => None,
    };
    let (relay0, self0) = (
        procfs::cpu_ticks(args.pid)?,
        procfs::cpu_ticks(std::process::id())?,
    );
    let ref0 = [0, 1].map(|k| tap.packets[k].load(Relaxed));
    let got0 = snap(&viewers);
    tap.hops.recording.store(true, Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.window)).await;
    let got1 = snap(&viewers);
    let secs = t0.elapsed().as_secs_f64();
    let ref1 = [0, 1].map(|k| tap.packets[k].load(Relaxed));
    let (relay1, self1) = (
        procfs::cpu_ticks(args.pid)?,
        procfs::cpu_ticks(std::process::id())?,
    );
    tap.hops.recording.store(false, Relaxed);
    let (rss, threads) = procfs::rss_and_threads(args.pid)?;
    let lat1 = match &args.metrics {
        Some(u) => Some(latency_buckets(&http, u).await?),
        None => None,
    };

    // Per viewer over the window: received / what the tap saw, and the
    // sequence-number gaps (packets a receiver would have to ask for).
    let reference = [0, 1].map(|k| (ref1[k] - ref0[k]) as f64);
    let (mut min_ratio, mut max_loss, mut sum_loss) = (f64::INFINITY, 0.0f64, 0.0);
    for (a, b) in got0.iter().zip(&got1) {
        let (got, expected): (u64, u64) = (0..2)
            .map(|k| (b[k].0 - a[k].0, b[k].1 - a[k].1))
            .fold((0, 0), |(g, e), (x, y)| (g + x, e + y));
        let loss = if expected > 0 {
            100.0 * expected.saturating_sub(got) as f64 / expected as f64
        } else {
            100.0
        };
        max_loss = max_loss.max(loss);
        sum_loss += loss;
        min_ratio = min_ratio.min(got as f64 / (reference[0] + reference[1]).max(1.0));
    }
    let n = viewers.len().max(1) as f64;
    let (hop_samples, hop_p50, hop_p99) = tap.hops.percentiles();
    let hz = procfs::ticks_per_second();
    let (relay_latency_p50, relay_latency_p99) = match (&lat0, &lat1) {
        (Some(a), Some(b)) => (bucket_quantile(a, b, 0.5), bucket_quantile(a, b, 0.99)),
        _ => (None, None),
    };
    let relay_latency_top = lat1.as_ref().and_then(|b| {
        b.iter()
            .rev()
            .find(|(le, _)| le.is_finite())
            .map(|(le, _)| le * 1000.0)
    });
    let out = json!({
        "relay": args.name.clone().unwrap_or_else(|| match args.relay {
            Relay::Whep(_) => "ffwhep".to_owned(),
            Relay::Janus(..) => "janus".to_owned(),
        }),
        "viewers": args.viewers,
        "connected": viewers.len(),
        "failed": failed,
        "connect_s": connect_s,
        "window_s": secs,
        "relay_cpu_pct": 100.0 * (relay1 - relay0) as f64 / hz / secs,
        "client_cpu_pct": 100.0 * (self1 - self0) as f64 / hz / secs,
        "relay_rss_kb_before": rss_before,
        "relay_rss_kb": rss,
        "relay_threads": threads,
        "reference_pps": [reference[0] / secs, reference[1] / secs],
        "received_vs_reference_min": if viewers.is_empty() { None } else { Some(min_ratio) },
        "loss_pct_max": max_loss,
        "loss_pct_mean": sum_loss / n,
        "hop_samples": hop_samples,
        "hop_unmatched": tap.hops.unmatched.load(Relaxed),
        "hop_p50_ms": hop_p50,
        "hop_p99_ms": hop_p99,
        "relay_latency_p50_le_ms": relay_latency_p50,
        "relay_latency_p99_le_ms": relay_latency_p99,
        "relay_latency_top_ms": relay_latency_top,
    });
    println!("{out}");
    for v in &viewers {
        v.close(&http).await;
    }
    Ok(())
}
