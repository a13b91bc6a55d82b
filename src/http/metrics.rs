//! `GET /metrics`: the registry's figures in the Prometheus text format,
//! built with the `prometheus` crate at scrape time, each with a `stream`
//! label.

use super::error::HttpError;
use crate::stream::registry::{State, StreamInfo, Streams};
use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder, proto,
};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One scrape's metric families.
struct Families {
    registry: Registry,
    state: IntGaugeVec,
    live: IntGaugeVec,
    runs: IntCounterVec,
    exits: IntCounterVec,
    viewers: IntGaugeVec,
    fps: GaugeVec,
    bitrate: GaugeVec,
    speed: GaugeVec,
    frames_dropped: IntCounterVec,
    frames_duplicated: IntCounterVec,
    source_packets: IntCounterVec,
    source_bytes: IntCounterVec,
    source_rtcp: IntCounterVec,
    source_errors: IntCounterVec,
    source_rejected: IntCounterVec,
    sent_packets: IntCounterVec,
    sent_bytes: IntCounterVec,
    sent_dropped: IntCounterVec,
    nacks: IntCounterVec,
    retransmitted: IntCounterVec,
    keyframe_requests: IntCounterVec,
    resyncs: IntCounterVec,
    by_rendition: IntGaugeVec,
    switches: IntCounterVec,
    cache_ready: IntGaugeVec,
    latency_p50: GaugeVec,
    latency_p99: GaugeVec,
    cache_bytes: IntGaugeVec,
    snapshots: IntCounterVec,
    snapshot_decodes: IntCounterVec,
    snapshot_failures: IntCounterVec,
    snapshot_decode_ms: GaugeVec,
    auth_decisions: IntCounterVec,
    hook_runs: IntCounterVec,
    push_connected: IntGaugeVec,
    push_attempts: IntCounterVec,
    push_packets: IntCounterVec,
    push_bytes: IntCounterVec,
    hook_events_dropped: IntCounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("ffwhep_{name}"), help)
}

impl Families {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let gauge = |n: &str, h: &str, l: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(opts(n, h), l)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let fgauge = |n: &str, h: &str| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(opts(n, h), &["stream"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |n: &str, h: &str, l: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(opts(n, h), l)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let s = &["stream"][..];
        let sk = &["stream", "kind"][..];
        Ok(Self {
            state: gauge(
                "stream_state",
                "1 for the state the stream is in.",
                &["stream", "state"],
            )?,
            live: gauge(
                "stream_live",
                "1 while FFmpeg progresses and every leg has fresh RTP.",
                s,
            )?,
            runs: counter("ffmpeg_runs_total", "FFmpeg runs started.", s)?,
            exits: counter(
                "ffmpeg_exits_total",
                "FFmpeg exits by reason.",
                &["stream", "reason"],
            )?,
            viewers: gauge("viewers", "Connected viewer sessions.", s)?,
            fps: fgauge("ffmpeg_fps", "FFmpeg's output frame rate.")?,
            bitrate: fgauge("ffmpeg_bitrate_kbps", "FFmpeg's output bitrate, kbit/s.")?,
            speed: fgauge("ffmpeg_speed", "FFmpeg's speed relative to real time.")?,
            frames_dropped: counter(
                "ffmpeg_frames_dropped_total",
                "Frames FFmpeg dropped (this run).",
                s,
            )?,
            frames_duplicated: counter(
                "ffmpeg_frames_duplicated_total",
                "Frames FFmpeg duplicated (this run).",
                s,
            )?,
            source_packets: counter(
                "source_rtp_packets_total",
                "RTP packets received from FFmpeg (this run).",
                sk,
            )?,
            source_bytes: counter(
                "source_rtp_bytes_total",
                "RTP bytes received from FFmpeg (this run).",
                sk,
            )?,
            source_rtcp: counter(
                "source_rtcp_packets_total",
                "RTCP packets seen on a source port (this run).",
                sk,
            )?,
            source_errors: counter(
                "source_errors_total",
                "Datagrams that were neither RTP nor RTCP (this run).",
                sk,
            )?,
            source_rejected: counter(
                "source_rejected_packets_total",
                "RTP refused on a source port: foreign, wrong payload type or SSRC (this run).",
                sk,
            )?,
            sent_packets: counter(
                "viewer_packets_sent_total",
                "RTP packets written toward viewers.",
                s,
            )?,
            sent_bytes: counter(
                "viewer_bytes_sent_total",
                "RTP bytes written toward viewers.",
                s,
            )?,
            sent_dropped: counter(
                "viewer_packets_dropped_total",
                "Packets dropped for viewers whose queue was full.",
                s,
            )?,
            nacks: counter(
                "viewer_nacked_packets_total",
                "Packets viewers asked for again (NACK).",
                s,
            )?,
            retransmitted: counter(
                "viewer_retransmitted_packets_total",
                "Packets resent from the shared history.",
                s,
            )?,
            keyframe_requests: counter(
                "viewer_keyframe_requests_total",
                "PLI and FIR received from viewers.",
                s,
            )?,
            resyncs: counter(
                "viewer_resyncs_total",
                "Viewers restarted from the GOP cache after falling behind.",
                s,
            )?,
            by_rendition: gauge(
                "viewers_by_rendition",
                "Connected viewers on each rendition of the video ladder.",
                &["stream", "rendition"],
            )?,
            switches: counter(
                "viewer_rendition_switches_total",
                "Switches of viewers between the ladder's renditions, up (better) or down.",
                &["stream", "direction"],
            )?,
            cache_ready: gauge(
                "gop_cache_ready",
                "1 while the video GOP cache holds a keyframe to start from.",
                s,
            )?,
            cache_bytes: gauge("gop_cache_bytes", "Bytes in the video GOP cache.", s)?,
            latency_p50: fgauge(
                "relay_latency_p50_ms",
                "Median source-to-viewer relay latency (sampled), ms.",
            )?,
            latency_p99: fgauge(
                "relay_latency_p99_ms",
                "99th percentile relay latency (sampled), ms.",
            )?,
            snapshots: counter("snapshots_total", "Snapshot pictures served.", s)?,
            snapshot_decodes: counter(
                "snapshot_decodes_total",
                "FFmpeg runs that decoded a snapshot.",
                s,
            )?,
            snapshot_failures: counter(
                "snapshot_failures_total",
                "Snapshot decodes that failed.",
                s,
            )?,
            auth_decisions: counter(
                "auth_decisions_total",
                "Viewers the authorization service admitted, refused, or could not decide on (unavailable).",
                &["stream", "decision"],
            )?,
            push_connected: gauge(
                "push_connected",
                "1 while the WHIP push (by its index in the profile's whip: list) is connected.",
                &["stream", "push"],
            )?,
            push_attempts: counter(
                "push_attempts_total",
                "Attempts to publish to the WHIP endpoint.",
                &["stream", "push"],
            )?,
            push_packets: counter(
                "push_packets_sent_total",
                "RTP packets sent to the WHIP endpoint's SFU.",
                &["stream", "push"],
            )?,
            push_bytes: counter(
                "push_bytes_sent_total",
                "Bytes of RTP sent to the WHIP endpoint's SFU.",
                &["stream", "push"],
            )?,
            hook_runs: counter(
                "hook_runs_total",
                "Hook runs (commands and POSTs) by result: ok, failed, timed_out.",
                &["stream", "result"],
            )?,
            hook_events_dropped: counter(
                "hook_events_dropped_total",
                "Events a hook never ran for: its queue was full, or the stream ended first.",
                s,
            )?,
            snapshot_decode_ms: fgauge(
                "snapshot_decode_ms",
                "Wall time of the last snapshot decode, ms.",
            )?,
            registry,
        })
    }

    /// Viewers on each rendition of a ladder, and the switches between
    /// them.
    fn rendition_metrics(&self, id: &str, info: &StreamInfo) {
        let mut on: std::collections::BTreeMap<String, i64> = Default::default();
        for (_, s) in &info.sessions {
            for name in s.viewer.renditions() {
                on.entry(name.clone()).or_default();
            }
            if let Some(r) = s.viewer.rendition() {
                *on.entry(r.current).or_default() += 1;
            }
        }
        for (name, n) in on {
            self.by_rendition
                .with_label_values(&[id, name.as_str()])
                .set(n);
        }
        for (direction, n) in [
            ("up", info.sent.switches_up),
            ("down", info.sent.switches_down),
        ] {
            if n > 0 {
                self.switches.with_label_values(&[id, direction]).inc_by(n);
            }
        }
    }

    fn fill(&self, snapshot: &[(String, StreamInfo)]) {
        for (id, info) in snapshot {
            let l = &[id.as_str()][..];
            for st in State::ALL {
                self.state
                    .with_label_values(&[id.as_str(), st.name()])
                    .set(i64::from(st == info.state));
            }
            self.live.with_label_values(l).set(i64::from(info.live));
            self.runs.with_label_values(l).inc_by(u64::from(info.runs));
            for (reason, n) in &info.exits {
                self.exits
                    .with_label_values(&[id.as_str(), reason])
                    .inc_by(*n);
            }
            self.viewers
                .with_label_values(l)
                .set(info.sessions.len() as i64);
            if let Some(p) = &info.progress {
                self.fps.with_label_values(l).set(p.fps);
                self.bitrate
                    .with_label_values(l)
                    .set(p.bitrate_kbps.unwrap_or(0.0));
                self.speed.with_label_values(l).set(p.speed.unwrap_or(0.0));
                self.frames_dropped
                    .with_label_values(l)
                    .inc_by(p.drop_frames);
                self.frames_duplicated
                    .with_label_values(l)
                    .inc_by(p.dup_frames);
            }
            for (kind, s) in &info.sources {
                let lk = &[id.as_str(), kind.as_str()][..];
                self.source_packets
                    .with_label_values(lk)
                    .inc_by(s.rtp_packets.load(Relaxed));
                self.source_bytes
                    .with_label_values(lk)
                    .inc_by(s.rtp_bytes.load(Relaxed));
                self.source_rtcp
                    .with_label_values(lk)
                    .inc_by(s.rtcp_packets.load(Relaxed));
                self.source_errors
                    .with_label_values(lk)
                    .inc_by(s.garbage_packets.load(Relaxed));
                self.source_rejected
                    .with_label_values(lk)
                    .inc_by(s.rejected_packets.load(Relaxed));
            }
            let sent = info.sent;
            self.sent_packets.with_label_values(l).inc_by(sent.packets);
            self.sent_bytes.with_label_values(l).inc_by(sent.bytes);
            self.sent_dropped.with_label_values(l).inc_by(sent.dropped);
            self.nacks.with_label_values(l).inc_by(sent.nacks);
            self.retransmitted
                .with_label_values(l)
                .inc_by(sent.retransmitted);
            self.keyframe_requests
                .with_label_values(l)
                .inc_by(sent.keyframe_requests);
            self.resyncs.with_label_values(l).inc_by(sent.resyncs);
            self.rendition_metrics(id, info);
            if let Some(a) = info.admissions {
                for (decision, n) in [
                    ("admitted", a.admitted),
                    ("refused", a.refused),
                    ("unavailable", a.unavailable),
                ] {
                    self.auth_decisions
                        .with_label_values(&[id.as_str(), decision])
                        .inc_by(n);
                }
            }
            for push in &info.pushes {
                let p = push.counts();
                let index = push.index.to_string();
                let l = &[id.as_str(), index.as_str()][..];
                let up = p.state == crate::stream::push::PushState::Connected;
                self.push_connected.with_label_values(l).set(i64::from(up));
                self.push_attempts.with_label_values(l).inc_by(p.attempts);
                self.push_packets
                    .with_label_values(l)
                    .inc_by(p.sent.packets);
                self.push_bytes.with_label_values(l).inc_by(p.sent.bytes);
            }
            if let Some(h) = info.hooks {
                for (result, n) in [
                    ("ok", h.ok),
                    ("failed", h.failed),
                    ("timed_out", h.timed_out),
                ] {
                    self.hook_runs
                        .with_label_values(&[id.as_str(), result])
                        .inc_by(n);
                }
                self.hook_events_dropped
                    .with_label_values(l)
                    .inc_by(h.dropped);
            }
            let snaps = info.snapshots;
            self.snapshots.with_label_values(l).inc_by(snaps.served);
            self.snapshot_decodes
                .with_label_values(l)
                .inc_by(snaps.decodes);
            self.snapshot_failures
                .with_label_values(l)
                .inc_by(snaps.failed);
            if let Some(ms) = snaps.last_decode_ms {
                self.snapshot_decode_ms.with_label_values(l).set(ms);
            }
            let lat = info.latency.summary();
            if let (Some(p50), Some(p99)) = (lat.p50_ms, lat.p99_ms) {
                self.latency_p50.with_label_values(l).set(p50);
                self.latency_p99.with_label_values(l).set(p99);
            }
            if let Some(c) = info.gop_cache {
                self.cache_ready
                    .with_label_values(l)
                    .set(i64::from(c.ready));
                self.cache_bytes.with_label_values(l).set(c.bytes as i64);
            }
        }
    }
}

/// `ffwhep_relay_latency_seconds`: the sampled relay latency as a
/// Prometheus histogram (cumulative over the stream's life), so that a
/// scraper can take the quantiles of any window from two scrapes.
fn latency_family(snapshot: &[(String, StreamInfo)]) -> proto::MetricFamily {
    let metrics = snapshot
        .iter()
        .map(|(id, info)| {
            let c = info.latency.cumulative();
            let mut label = proto::LabelPair::default();
            label.set_name("stream".to_owned());
            label.set_value(id.clone());
            let buckets = c
                .bounds_s
                .iter()
                .map(|&(bound, n)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(n);
                    b
                })
                .collect();
            let mut h = proto::Histogram::default();
            h.set_bucket(buckets);
            h.set_sample_count(c.count);
            h.set_sample_sum(c.sum_s);
            let mut m = proto::Metric::from_label(vec![label]);
            m.set_histogram(h);
            m
        })
        .collect();
    let mut family = proto::MetricFamily::default();
    family.set_name("ffwhep_relay_latency_seconds".to_owned());
    family.set_help(format!(
        "Source-to-viewer relay latency, one packet in {} timed.",
        crate::latency::SAMPLE_EVERY
    ));
    family.set_field_type(proto::MetricType::HISTOGRAM);
    family.set_metric(metrics);
    family
}

/// The text exposition of every stream's metrics.
fn render(snapshot: &[(String, StreamInfo)]) -> prometheus::Result<String> {
    let families = Families::new()?;
    // One snapshot for every family, so they agree with each other.
    families.fill(snapshot);
    let mut gathered = families.registry.gather();
    gathered.push(latency_family(snapshot));
    let mut out = Vec::new();
    TextEncoder::new().encode(&gathered, &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub(super) async fn metrics(
    AxState(streams): AxState<Arc<Streams>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, HttpError> {
    let snapshot = super::status::visible(&streams, &headers)?;
    let text = render(&snapshot)
        .map_err(|e| HttpError::Internal(format!("cannot render metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
