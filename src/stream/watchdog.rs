//! The stall watchdog of a run: FFmpeg's progress and each source's RTP
//! count, looked at every second; media is live while all of it moves.

use crate::ffmpeg::progress::Progress;
use crate::source::SourceStats;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the watchdog looks at progress and the sources.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// Media counts as live while it moved within this window.
const LIVE_WINDOW: Duration = Duration::from_secs(3);
/// How often progress is logged.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

/// Resolves with the reason once FFmpeg has made no progress, or a source
/// has had no RTP, for `timeout`; never when `timeout` is `None`. Each tick
/// it hands `report` the latest progress and whether media is live (all of
/// it moved within `LIVE_WINDOW`), and now and then logs the progress.
pub(super) async fn watchdog(
    mut progress: watch::Receiver<Option<Progress>>,
    sources: Vec<(String, Arc<SourceStats>)>,
    timeout: Option<Duration>,
    report: impl Fn(Option<Progress>, bool),
) -> String {
    let start = Instant::now();
    let mut last_progress = (start, Progress::default());
    let mut last_rtp: Vec<(Instant, u64)> = sources.iter().map(|_| (start, 0)).collect();
    let mut logged = start;
    let mut tick = tokio::time::interval(WATCH_TICK);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if let Some(p) = progress.borrow_and_update().clone() {
            if p.advanced_from(&last_progress.1) {
                last_progress = (now, p.clone());
            }
            if now.duration_since(logged) >= PROGRESS_LOG_EVERY {
                logged = now;
                tracing::info!(
                    frame = p.frame,
                    fps = p.fps,
                    bitrate_kbps = p.bitrate_kbps,
                    speed = p.speed,
                    drop_frames = p.drop_frames,
                    dup_frames = p.dup_frames,
                    "progress"
                );
            }
        }
        for ((_, stats), last) in sources.iter().zip(&mut last_rtp) {
            let n = stats.rtp_packets.load(Relaxed);
            if n != last.1 {
                *last = (now, n);
            }
        }
        let fresh = |t: Instant| t > start && now.duration_since(t) < LIVE_WINDOW;
        let live = fresh(last_progress.0) && last_rtp.iter().all(|(t, _)| fresh(*t));
        report(progress.borrow().clone(), live);
        let Some(timeout) = timeout else { continue };
        if now.duration_since(last_progress.0) >= timeout {
            return format!("no progress from FFmpeg for {} s", timeout.as_secs_f64());
        }
        for ((name, _), last) in sources.iter().zip(&last_rtp) {
            if now.duration_since(last.0) >= timeout {
                return format!(
                    "no RTP on the {name} source for {} s",
                    timeout.as_secs_f64()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn watchdog_fires_on_missing_progress() {
        let (tx, rx) = watch::channel(None);
        let dog = tokio::spawn(watchdog(
            rx,
            vec![],
            Some(Duration::from_secs(5)),
            |_, _| {},
        ));
        // Progress for 3 s, then silence.
        for frame in 1..=3 {
            tx.send_replace(Some(Progress {
                frame,
                ..Default::default()
            }));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let started_silence = Instant::now();
        let why = dog.await.unwrap();
        assert!(why.contains("no progress from FFmpeg for 5 s"), "{why}");
        let waited = Instant::now().duration_since(started_silence);
        assert!(
            waited >= Duration::from_secs(4) && waited <= Duration::from_secs(6),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_fires_on_a_silent_source() {
        let (tx, rx) = watch::channel(None);
        let video = Arc::new(SourceStats::default());
        let dog = tokio::spawn(watchdog(
            rx,
            vec![("video".to_owned(), video.clone())],
            Some(Duration::from_secs(5)),
            |_, _| {},
        ));
        for frame in 1..=20 {
            tx.send_replace(Some(Progress {
                frame,
                ..Default::default()
            }));
            if frame < 3 {
                video.rtp_packets.fetch_add(10, Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if dog.is_finished() {
                break;
            }
        }
        let why = dog.await.unwrap();
        assert!(why.contains("no RTP on the video source"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_reports_media_live_only_while_it_moves() {
        let (tx, rx) = watch::channel(None);
        let video = Arc::new(SourceStats::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let report = move |_: Option<Progress>, live: bool| log.lock().unwrap().push(live);
        let dog = tokio::spawn(watchdog(
            rx,
            vec![("video".to_owned(), video.clone())],
            None,
            report,
        ));
        for frame in 1..=5 {
            tx.send_replace(Some(Progress {
                frame,
                ..Default::default()
            }));
            video.rtp_packets.fetch_add(10, Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        dog.abort();
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen[1..5].iter().all(|l| *l),
            "not live while moving: {seen:?}"
        );
        assert!(
            !seen.last().unwrap(),
            "still live after media stopped: {seen:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_without_timeout_never_fires() {
        let (_tx, rx) = watch::channel(None);
        let dog = watchdog(rx, vec![], None, |_, _| {});
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), dog)
                .await
                .is_err()
        );
    }
}
