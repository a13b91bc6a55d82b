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
}
