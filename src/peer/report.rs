//! What a viewer has been sent and how its connection fares: our own
//! counters plus the WebRTC stack's statistics (NACKs, RTT, remote address).

use super::Viewer;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, UNIX_EPOCH};
use webrtc::peer_connection::{RTCStatsReportEntry, StatsSelector};

/// One viewer, for status.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ViewerReport {
    pub state: String,
    /// Unix time in seconds when the connection came up.
    pub connected_since: Option<f64>,
    /// The viewer's address on the selected ICE candidate pair.
    pub remote: Option<String>,
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
}

impl Viewer {
    pub async fn report(&self) -> ViewerReport {
        let since = *self.connected_at.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = ViewerReport {
            state: self.state.borrow().to_string(),
            connected_since: since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            packets_sent: self.counters.packets_sent.load(Relaxed),
            bytes_sent: self.counters.bytes_sent.load(Relaxed),
            dropped: self.counters.dropped.load(Relaxed),
            nacks: self.counters.nacks.load(Relaxed),
            retransmitted: self.counters.retransmitted.load(Relaxed),
            keyframe_requests: self.counters.keyframe_requests.load(Relaxed),
            resyncs: self.counters.resyncs.load(Relaxed),
            ..Default::default()
        };
        let stats = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        // The pair media flows on: the one that carried the most.
        let mut pair: Option<(u64, String, f64)> = None;
        for e in stats.iter() {
            match e {
                RTCStatsReportEntry::RemoteInboundRtp(ri) if ri.round_trip_time > 0.0 => {
                    r.rtt_ms = Some(ri.round_trip_time * 1000.0);
                }
                RTCStatsReportEntry::IceCandidatePair(p)
                    if pair.as_ref().is_none_or(|(b, _, _)| p.bytes_sent > *b) =>
                {
                    pair = Some((
                        p.bytes_sent,
                        p.remote_candidate_id.clone(),
                        p.current_round_trip_time,
                    ));
                }
                _ => {}
            }
        }
        if let Some((_, id, pair_rtt)) = pair {
            if r.rtt_ms.is_none() && pair_rtt > 0.0 {
                r.rtt_ms = Some(pair_rtt * 1000.0);
            }
            if let Some(RTCStatsReportEntry::RemoteCandidate(c)) = stats.get(&id) {
                r.remote = c.address.as_ref().map(|a| format!("{a}:{}", c.port));
            }
        }
        if r.remote.is_none() {
            // A peer-reflexive remote (learnt from checks) has no stats entry:
            // ask the ICE transport for its selected pair instead.
            r.remote = self.selected_remote().await;
        }
        r
    }

    async fn selected_remote(&self) -> Option<String> {
        let sender = self.pc.get_senders().await.into_iter().next()?;
        let dtls = sender.transport().await.ok()??;
        let pair = dtls
            .ice_transport()
            .get_selected_candidate_pair()
            .await
            .ok()??;
        Some(format!("{}:{}", pair.remote().address, pair.remote().port))
    }
}
