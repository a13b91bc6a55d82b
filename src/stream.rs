//! One stream's lifecycle: bind the port pair and start the sources, publish
//! them, spawn FFmpeg, and when it exits run the teardown broadcast in order:
//! every viewer hung up, then the sources closed, then the ports are free.

use crate::exit::Failure;
use crate::ffmpeg::args::{self, LegPorts};
use crate::ffmpeg::supervisor::{Exit, Ffmpeg};
use crate::peer::StreamMedia;
use crate::ports::allocate_pair;
use crate::profile::Plan;
use crate::source::Source;
use crate::whep::Streams;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a stream needs to run.
pub struct StreamRun {
    pub plan: Plan,
    pub ffmpeg: OsString,
    pub streams: Arc<Streams>,
    /// Fires to ask FFmpeg to stop.
    pub stop: CancellationToken,
    /// How long FFmpeg has to stop after SIGINT before SIGKILL.
    pub grace: Duration,
}

/// Runs the stream until FFmpeg exits, then tears it down. `ready` is called
/// once FFmpeg has been spawned, with the port pair.
pub async fn run(run: StreamRun, ready: impl FnOnce(LegPorts)) -> Result<Exit, Failure> {
    let id = run.plan.id.to_string();
    run.streams.declare(&id);
    let pair = allocate_pair()?;
    let ports = LegPorts {
        video: pair.video_port(),
        audio: pair.audio_port(),
    };
    let video =
        Source::start(pair.video, "video").map_err(Failure::setup("starting the video source"))?;
    let audio =
        Source::start(pair.audio, "audio").map_err(Failure::setup("starting the audio source"))?;
    tracing::info!(
        video_port = ports.video,
        audio_port = ports.audio,
        "sources bound"
    );
    let media = StreamMedia {
        video: run.plan.video.as_ref().map(|_| video.handle()),
        audio: run.plan.audio.as_ref().map(|_| audio.handle()),
    };
    run.streams.publish(&id, media);

    let argv = args::build(&run.plan, ports);
    tracing::debug!(command = %args::shell_line(&run.ffmpeg.to_string_lossy(), &argv), "spawning FFmpeg");
    let result = match Ffmpeg::spawn(&run.ffmpeg, &argv) {
        Ok(ff) => {
            tracing::info!(pid = ff.pid(), "FFmpeg started");
            ready(ports);
            ff.wait(run.stop.clone(), run.grace)
                .await
                .map_err(Failure::setup("waiting for FFmpeg"))
        }
        Err(e) => Err(Failure::from(e)),
    };
    if let Ok(exit) = &result {
        tracing::info!(status = %exit.status, "FFmpeg exited");
    }
    teardown(&id, &run.streams, video, audio).await;
    result
}

/// Hangs up every viewer, then closes both sources; the ports are free when
/// this returns.
async fn teardown(id: &str, streams: &Streams, video: Source, audio: Source) {
    let viewers = streams.unpublish(id);
    let hung_up = viewers.len();
    futures::future::join_all(viewers.iter().map(|v| v.hang_up())).await;
    for source in [&video, &audio] {
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
    video.close().await;
    audio.close().await;
    tracing::info!(
        viewers_hung_up = hung_up,
        "teardown done: viewers hung up, sources closed, ports freed"
    );
}
