//! What a viewer has been sent and how its connection fares: our own
//! counters plus the WebRTC stack's statistics (RTT, remote address), asked
//! of the viewer's shard.

use super::Viewer;
use super::conn::StartTimes;
use super::shard::Input;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;
use tokio::sync::oneshot;

/// One viewer, for status.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ViewerReport {
    pub state: String,
    /// Unix time in seconds when the connection came up.
    pub connected_since: Option<f64>,
    /// The viewer's address on the selected ICE candidate pair.
    pub remote: Option<String>,
    /// `udp`, or `tcp` for ICE-TCP.
    pub transport: Option<&'static str>,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Packets not sent because the viewer's queue was full.
    pub dropped: u64,
    /// Packets the viewer asked for again (NACK), and those resent.
    pub nacks: u64,
    pub retransmitted: u64,
    /// PLI and FIR the viewer sent.
    pub keyframe_requests: u64,
    /// Restarts from the GOP cache after the viewer fell behind.
    pub resyncs: u64,
    /// Round-trip time from the viewer's receiver reports.
    pub rtt_ms: Option<f64>,
    /// Its start, in ms after its answer was made: ICE connected, DTLS
    /// connected, media started.
    pub start: StartTimes,
    /// On a ladder: the rendition it is sent, how it is chosen, the link's
    /// estimated capacity for video, and the switches so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendition: Option<Rendition>,
}

/// A viewer's place on the ladder, for status.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Rendition {
    pub current: String,
    /// `auto`, or `pinned` by the viewer.
    pub mode: &'static str,
    pub estimated_kbps: Option<f64>,
    pub switches_up: u64,
    pub switches_down: u64,
}

impl Viewer {
    pub async fn report(&self) -> ViewerReport {
        let since = *self
            .shared
            .connected_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let c = &self.shared.counters;
        let mut r = ViewerReport {
            state: self.state.borrow().to_string(),
            connected_since: since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            packets_sent: c.packets_sent.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            nacks: c.nacks.load(Relaxed),
            retransmitted: c.retransmitted.load(Relaxed),
            keyframe_requests: c.keyframe_requests.load(Relaxed),
            resyncs: c.resyncs.load(Relaxed),
            start: *self.shared.start.lock().unwrap_or_else(|p| p.into_inner()),
            rendition: self.rendition(),
            ..Default::default()
        };
        let (tx, rx) = oneshot::channel();
        if self.shard.send(Input::Report(self.id, tx)).await.is_ok()
            && let Ok(link) = rx.await
        {
            r.rtt_ms = link.rtt_ms;
            r.remote = link.remote;
            r.transport = link.transport;
        }
        r
    }

    /// Its place on the ladder, if the stream has one.
    pub fn rendition(&self) -> Option<Rendition> {
        let c = &self.shared.counters;
        let rung = c.rung.load(Relaxed).checked_sub(1)?;
        let estimate = c.estimate_bps.load(Relaxed);
        Some(Rendition {
            current: self.rungs.get(rung as usize)?.clone(),
            mode: if c.pinned.load(Relaxed) {
                "pinned"
            } else {
                "auto"
            },
            estimated_kbps: (estimate > 0).then(|| (estimate as f64 / 100.0).round() / 10.0),
            switches_up: c.switches_up.load(Relaxed),
            switches_down: c.switches_down.load(Relaxed),
        })
    }
}
