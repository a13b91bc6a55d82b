//! Checks on what a viewer received and on how its connection ended, that
//! only tests need.

use ffwhep::smoke::viewer::{Received, Viewer};
use std::time::{Duration, Instant};
use webrtc::peer_connection::{RTCPeerConnectionState, RTCStatsReportEntry, StatsSelector};

/// How far apart the sender reports put audio and video, compared with when
/// their last packets arrived: the capture times the reports give the two
/// last packets differ from their arrival times by this much. `None` until
/// both kinds have a report and a packet.
pub fn av_sync_error(r: &Received) -> Option<Duration> {
    let capture = |k: usize, clock: f64| -> Option<(f64, Instant)> {
        let (ntp, rtp, _) = r.sender_reports[k]?;
        let (ts, arrived) = r.last_packet[k]?;
        let ntp_secs = (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
        Some((
            ntp_secs + f64::from(ts.wrapping_sub(rtp) as i32) / clock,
            arrived,
        ))
    };
    let (video, v_at) = capture(0, 90_000.0)?;
    let (audio, a_at) = capture(1, 48_000.0)?;
    let by_reports = video - audio;
    let by_arrival = if v_at >= a_at {
        v_at.duration_since(a_at).as_secs_f64()
    } else {
        -a_at.duration_since(v_at).as_secs_f64()
    };
    Some(Duration::from_secs_f64((by_reports - by_arrival).abs()))
}

/// How much more video time (by RTP timestamps) arrived than wall time
/// passed between the first video packet and the last: a cached GOP sent at
/// once gives a lead of its age; live packets none.
pub fn video_lead(r: &Received) -> Option<Duration> {
    let ((ts0, t0), (ts1, t1)) = (r.first_packet[0]?, r.last_packet[0]?);
    let media = f64::from(ts1.wrapping_sub(ts0)) / 90_000.0;
    let wall = t1.duration_since(t0).as_secs_f64();
    Some(Duration::from_secs_f64((media - wall).max(0.0)))
}

/// Waits until the server has ended the connection: its DTLS transport
/// closed by the server's close_notify, or the connection closed, failed or
/// disconnected. Returns how it ended, or `None` after `within`.
pub async fn wait_hung_up(v: &Viewer, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let state = v.state();
        if matches!(
            state,
            RTCPeerConnectionState::Closed
                | RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Disconnected
        ) {
            return Some(format!("connection {state}"));
        }
        if dtls_states(v)
            .await
            .iter()
            .any(|s| s == "dtls closed" || s == "receiver dtls Ok(Closed)")
        {
            return Some("DTLS closed by the server".to_owned());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The DTLS transport states the viewer can see, and its connection state,
/// for hang-up detection and diagnostics.
pub async fn dtls_states(v: &Viewer) -> Vec<String> {
    let report = v.pc.get_stats(Instant::now(), StatsSelector::None).await;
    let mut states: Vec<String> = report
        .iter()
        .filter_map(|e| match e {
            RTCStatsReportEntry::Transport(t) => Some(format!("dtls {}", t.dtls_state)),
            _ => None,
        })
        .collect();
    for receiver in v.pc.get_receivers().await {
        if let Ok(Some(t)) = receiver.transport().await {
            states.push(format!("receiver dtls {:?}", t.state().await));
        }
    }
    states.push(format!("pc {}", v.state()));
    states
}
