//! The RTP sources of one FFmpeg run: its ports bound (video, audio, and one
//! per extra rung of a video ladder), a source started on each, what the
//! engine and the watchdog are given of them, and their closing at the end
//! of the teardown.

use crate::engine::{Rendition, StreamMedia};
use crate::exit::Failure;
use crate::ffmpeg::args::LegPorts;
use crate::profile::Plan;
use crate::source::ports::allocate_ports;
use crate::source::{Source, SourceKind, SourceStats};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The sources of one run, each draining its port from the start.
pub(super) struct RunSources {
    video: Source,
    audio: Source,
    /// Rungs 1, 2, ... of the video ladder (rung 0 is `video`).
    rungs: Vec<Source>,
    pub ports: LegPorts,
}

impl RunSources {
    /// Binds the run's ports and starts a source on each.
    pub fn start(plan: &Plan) -> Result<Self, Failure> {
        let rung_plans = plan.video.as_ref().map_or(&[][..], |v| &v.rungs[..]);
        let pair = allocate_ports(rung_plans.len().saturating_sub(1))?;
        let ports = LegPorts {
            video: pair.video_port(),
            audio: pair.audio_port(),
        };
        let video_kind = SourceKind::Video {
            pt: plan.video.as_ref().map(|l| l.payload_type),
            cache: plan.gop_cache,
        };
        let video = Source::start(pair.video, "video", video_kind)
            .map_err(Failure::setup("starting the video source"))?;
        let audio_kind = SourceKind::Audio {
            pt: plan.audio.as_ref().map(|l| l.payload_type),
        };
        let mut started = Self {
            audio: Source::start(pair.audio, "audio", audio_kind)
                .map_err(Failure::setup("starting the audio source"))?,
            video,
            rungs: Vec::new(),
            ports,
        };
        for (r, socket) in rung_plans.iter().skip(1).zip(pair.rungs) {
            let name = format!("video_{}", r.rung.name());
            // On an error, the sources started so far stop when dropped.
            let source = Source::start(socket, name, video_kind)
                .map_err(Failure::setup("starting a ladder rung's source"))?;
            started.rungs.push(source);
        }
        Ok(started)
    }

    /// What viewers and pushes are given: the sources the plan has legs
    /// for, and the ladder's renditions from the best down.
    pub fn media(&self, plan: &Plan, latency: Arc<crate::latency::Histogram>) -> StreamMedia {
        let video = plan.video.as_ref().map(|_| self.video.handle());
        let rungs = plan.video.as_ref().map_or_else(Vec::new, |leg| {
            let sources = std::iter::once(&self.video).chain(&self.rungs);
            leg.rungs
                .iter()
                .zip(sources)
                .map(|(r, s)| Rendition {
                    name: r.rung.name(),
                    height: r.rung.height,
                    bitrate: r.rung.bitrate,
                    source: s.handle(),
                })
                .collect()
        });
        StreamMedia {
            video,
            audio: plan.audio.as_ref().map(|_| self.audio.handle()),
            rungs,
            switch_at: plan.video.as_ref().map(|l| l.switch_at).unwrap_or_default(),
            latency,
        }
    }

    /// The sources the watchdog watches (and status shows), by name.
    pub fn watched(&self, plan: &Plan) -> Vec<(String, Arc<SourceStats>)> {
        let mut v = Vec::new();
        if plan.video.is_some() {
            v.push(("video".to_owned(), self.video.handle().stats));
        }
        if plan.audio.is_some() {
            v.push(("audio".to_owned(), self.audio.handle().stats));
        }
        let names = plan.video.iter().flat_map(|l| l.rungs.iter().skip(1));
        for (r, s) in names.zip(&self.rungs) {
            v.push((format!("video_{}", r.rung.name()), s.handle().stats));
        }
        v
    }

    /// Logs each source's totals, then closes them all: their ports are free.
    pub async fn close(self) {
        let all: Vec<Source> = [self.video, self.audio]
            .into_iter()
            .chain(self.rungs)
            .collect();
        for source in &all {
            let h = source.handle();
            let s = &h.stats;
            tracing::info!(
                port = h.port,
                rtp_packets = s.rtp_packets.load(Relaxed),
                rtp_bytes = s.rtp_bytes.load(Relaxed),
                rtcp_packets = s.rtcp_packets.load(Relaxed),
                garbage_packets = s.garbage_packets.load(Relaxed),
                dropped_for_slow_viewers = s.dropped.load(Relaxed),
                "source totals"
            );
        }
        for source in all {
            source.close().await;
        }
    }
}
