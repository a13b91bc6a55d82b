//! Moving one kind of media from a source to one viewer's track, rewritten
//! to the viewer's payload type and SSRC, once its connection is up.

use super::{ViewerCounters, is_over};
use crate::rtp::RtpPacket;
use crate::source::{DropCount, SourceHandle};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::RTCPeerConnectionState;

/// Packets queued between a source and one viewer's track.
const VIEWER_QUEUE: usize = 512;

/// Moves one kind of media from a source to one viewer's track.
pub(super) struct Forwarder {
    pub track: Arc<TrackLocalStaticRTP>,
    pub source: SourceHandle,
    pub pt: u8,
    pub ssrc: u32,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub cancel: CancellationToken,
    /// This viewer's counters, then the stream's.
    pub counters: [Arc<ViewerCounters>; 2],
}

impl Forwarder {
    pub async fn run(mut self) {
        // Forward only once connected: before that, writes cannot be protected.
        let connected = tokio::select! {
            _ = self.cancel.cancelled() => return,
            s = self.state.wait_for(|s| *s == RTCPeerConnectionState::Connected || is_over(*s)) => {
                matches!(s.as_deref(), Ok(RTCPeerConnectionState::Connected))
            }
        };
        if !connected {
            return;
        }
        let drops = self
            .counters
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn DropCount>)
            .collect();
        let Some(mut rx) = self.source.subscribe(VIEWER_QUEUE, drops).await else {
            return;
        };
        let mut errors = 0u64;
        loop {
            let packet = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                p = rx.recv() => match p { Some(p) => p, None => break },
            };
            let bytes = packet.data.len() as u64;
            match self.track.write_rtp(self.rewrite(&packet)).await {
                Ok(()) => {
                    for c in &self.counters {
                        c.packets_sent.fetch_add(1, Relaxed);
                        c.bytes_sent.fetch_add(bytes, Relaxed);
                    }
                }
                Err(e) => {
                    errors += 1;
                    if errors == 1 {
                        tracing::debug!(error = %e, "write to viewer failed");
                    }
                }
            }
        }
    }

    fn rewrite(&self, p: &RtpPacket) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: p.marker,
                payload_type: self.pt,
                sequence_number: p.sequence,
                timestamp: p.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: p.payload(),
        }
    }
}
