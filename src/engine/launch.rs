//! A connection made and handed to its shard: a viewer's, answering its
//! offer, or a push's, offering to an SFU and then taking its answer. The
//! core's description is made here (on the caller's task); from the
//! join on, the connection lives in the shard.

use super::conn::{Conn, ConnTrack, Shared};
use super::counters::ViewerCounters;
use super::ladder::{Choice, RungOut, TrackLadder};
use super::own_conn::{self, Transport};
use super::shard::{FEED_QUEUE, Input};
use super::track::{ForwardPolicy, TrackOut};
use super::{Engine, PeerError, StreamMedia, Viewer, answer, offer, probe};
use crate::sdp::offer::{OfferError, Offered};
use crate::sdp::remote::Remote;
use crate::source::SourceHandle;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Random hex digits (at most 64), for ICE credentials.
fn random_token(len: usize) -> String {
    let hex = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    hex[..len.min(hex.len())].to_owned()
}

/// Identifies a source across shards (its feed).
fn feed_key(source: &SourceHandle) -> usize {
    Arc::as_ptr(&source.stats) as usize
}

/// Answers `offer` with a viewer of `media`, negotiating H.264 and Opus, on
/// the engine's least busy shard. Log lines of the viewer carry the
/// caller's span (stream and session id).
/// On a ladder, `choice` says which rendition it starts on.
pub async fn accept_offer(
    engine: &Engine,
    media: &StreamMedia,
    offer: &str,
    choice: Choice,
) -> Result<Viewer, PeerError> {
    let offered = Offered::parse(offer)?;
    let video = media.video.clone().filter(|_| offered.h264);
    let audio = media.audio.clone().filter(|_| offered.opus);
    if video.is_none() && audio.is_none() {
        let why = offered.mismatch(media.video.is_some(), media.audio.is_some());
        return Err(OfferError::NoCommonCodec(why).into());
    }
    let shard = engine.pick();
    let locals = engine.gather(&engine.shards[shard]).await;
    let sources = by_kind(video, audio);
    let kinds: Vec<RtpCodecKind> = sources.iter().map(|(k, _)| *k).collect();
    let id = engine.credentials();
    let now = Instant::now();
    let answered = answer::answer(offer, &kinds, &id, &locals, now)?;
    // The stack keeps NAT 1:1 addresses out of its candidates: done here.
    let answer =
        crate::sdp::candidates::rewrite_host_candidates(&answered.answer, &engine.config.nat_ips);
    // The core wrote the answer; the connection is ffwhep's own from here.
    drop(answered.core);
    let core = transport(&id, &locals, offer, false, now)?;
    let launch = Launch {
        shard,
        core,
        tracks: answered.tracks,
        sources,
        ufrag: id.ufrag,
        remote: (offered.ice_ufrag, offered.ice_pwd),
        controlling: false,
        made_at: now,
        sdp: answer,
        choice: Some(choice),
    };
    launch.run(engine, media).await
}

/// A connection ffwhep offers to an SFU (a WHIP push), waiting for the
/// answer.
pub struct PushOffer {
    shard: usize,
    offering: offer::Offering,
    sources: Vec<(RtpCodecKind, SourceHandle)>,
    id: answer::Credentials,
    locals: Vec<answer::Local>,
    made_at: Instant,
    /// The SDP offer, with our candidates (NAT 1:1 addresses in place).
    pub offer: String,
}

/// Offers `media` (H.264 and Opus, send-only) on the least busy shard.
pub async fn offer_push(engine: &Engine, media: &StreamMedia) -> Result<PushOffer, PeerError> {
    let sources = by_kind(media.video.clone(), media.audio.clone());
    let kinds: Vec<RtpCodecKind> = sources.iter().map(|(k, _)| *k).collect();
    let shard = engine.pick();
    let locals = engine.gather(&engine.shards[shard]).await;
    let id = engine.credentials();
    let now = Instant::now();
    let offering = offer::offer(&kinds, &id, &locals, now)?;
    let offer =
        crate::sdp::candidates::rewrite_host_candidates(&offering.offer, &engine.config.nat_ips);
    Ok(PushOffer {
        shard,
        offering,
        sources,
        id,
        locals,
        made_at: now,
        offer,
    })
}

impl PushOffer {
    /// The shard its connection lives in.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Applies the SFU's `answer`; the connection then comes up in its
    /// shard and sends `media` (the GOP first) once it is up.
    pub async fn connect(
        self,
        engine: &Engine,
        media: &StreamMedia,
        answer: &str,
    ) -> Result<Viewer, PeerError> {
        let answered = Offered::parse(answer).ok();
        let now = Instant::now();
        let (core, tracks) = self
            .offering
            .accept(answer, now)
            .map_err(OfferError::Unparsable)?;
        drop(core);
        let core = transport(&self.id, &self.locals, answer, true, now)?;
        let remote = answered.map_or((None, None), |a| (a.ice_ufrag, a.ice_pwd));
        let launch = Launch {
            shard: self.shard,
            core,
            tracks,
            sources: self.sources,
            ufrag: self.id.ufrag,
            remote,
            controlling: true,
            made_at: self.made_at,
            sdp: String::new(),
            choice: None,
        };
        launch.run(engine, media).await
    }
}

impl Engine {
    /// Fresh ICE credentials, and the engine's certificate, for a new
    /// connection.
    fn credentials(&self) -> answer::Credentials {
        answer::Credentials {
            ufrag: random_token(16),
            pwd: random_token(24),
            certificate: self.certificate(),
        }
    }

    /// A trickle fragment (`application/trickle-ice-sdpfrag`) for the push
    /// on `shard` that offered `offer`: the server-reflexive candidates the
    /// STUN servers among `ice_servers` see of the shard's sockets; `None`
    /// when they see none.
    pub async fn reflexive_fragment(
        &self,
        shard: usize,
        offer: &str,
        ice_servers: &[String],
    ) -> Option<String> {
        let urls: Vec<&str> = ice_servers.iter().map(String::as_str).collect();
        let found = self.reflexive_of(&self.shards[shard], &urls).await;
        let candidates: Vec<String> = found
            .iter()
            .filter_map(|l| answer::candidate(l).ok())
            .map(|c| c.candidate)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        crate::sdp::trickle::fragment_for(offer, &candidates)
    }
}

/// The connection's transport, from our credentials and candidates and the
/// peer's description.
fn transport(
    id: &answer::Credentials,
    locals: &[answer::Local],
    remote_sdp: &str,
    controlling: bool,
    now: Instant,
) -> Result<Transport, PeerError> {
    let remote = Remote::parse(remote_sdp).map_err(|e| OfferError::Unparsable(e.to_string()))?;
    let candidates = locals
        .iter()
        .filter_map(|l| answer::ice_candidate(l).ok())
        .collect();
    let local = own_conn::Local {
        ufrag: &id.ufrag,
        pwd: &id.pwd,
        certificate: &id.certificate,
        candidates,
        controlling,
    };
    Transport::new(now, local, &remote).map_err(PeerError::Internal)
}

/// The sources there are, by kind.
fn by_kind(
    video: Option<SourceHandle>,
    audio: Option<SourceHandle>,
) -> Vec<(RtpCodecKind, SourceHandle)> {
    [(RtpCodecKind::Video, video), (RtpCodecKind::Audio, audio)]
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect()
}

/// Gives `shard` a feed of each source it has none of yet (should two joins
/// race, the shard keeps the first).
async fn feed(shard: &super::start::ShardHandle, sources: &[(RtpCodecKind, SourceHandle)]) {
    for (_, source) in sources {
        let key = feed_key(source);
        if shard
            .fed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            continue;
        }
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        if source.subscribe(tx).await {
            let _ = shard.inbox.send(Input::Feed(key, rx)).await;
        }
    }
}

/// A viewer's place on `media`'s ladder, starting on `choice`'s rung.
fn ladder(
    media: &StreamMedia,
    choice: Choice,
    counters: &Arc<ViewerCounters>,
    now: Instant,
) -> TrackLadder {
    let rungs = media
        .rungs
        .iter()
        .map(|r| RungOut {
            source: r.source.clone(),
            key: feed_key(&r.source),
            name: r.name.clone(),
            bitrate: r.bitrate,
        })
        .collect();
    TrackLadder::new(
        rungs,
        choice,
        counters.clone(),
        tracing::Span::current(),
        now,
    )
}

/// A core with its description done, ready to live in its shard.
struct Launch {
    shard: usize,
    core: Transport,
    tracks: Vec<answer::Negotiated>,
    sources: Vec<(RtpCodecKind, SourceHandle)>,
    ufrag: String,
    /// The peer's ICE ufrag and pwd, for our check.
    remote: (Option<String>, Option<String>),
    /// Whether we are the controlling ICE agent (we offered).
    controlling: bool,
    made_at: Instant,
    /// Our SDP (the answer), handed back on the viewer.
    sdp: String,
    /// A viewer's choice of rendition; None for a push (the best one).
    choice: Option<Choice>,
}

impl Launch {
    /// Gives the connection to its shard (with a feed of each source the
    /// shard lacks); the handle to it.
    async fn run(self, engine: &Engine, media: &StreamMedia) -> Result<Viewer, PeerError> {
        let shard = &engine.shards[self.shard];
        let laddered = self.choice.filter(|_| !media.rungs.is_empty());
        let mut fed = self.sources.clone();
        if laddered.is_some() && self.sources.iter().any(|(k, _)| *k == RtpCodecKind::Video) {
            let rungs = media.rungs.iter().skip(1);
            fed.extend(rungs.map(|r| (RtpCodecKind::Video, r.source.clone())));
        }
        feed(shard, &fed).await;
        let counters = Arc::new(ViewerCounters::default());
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let shared = Arc::new(Shared {
            state: state_tx,
            counters: counters.clone(),
            connected_at: Mutex::new(None),
            start: Mutex::new(Default::default()),
            cancel: CancellationToken::new(),
        });
        let mut core = self.core;
        for (kind, _, _, ssrc) in &self.tracks {
            // H.264 runs a 90 kHz clock, Opus 48 kHz.
            let rate = if *kind == RtpCodecKind::Video {
                90_000
            } else {
                48_000
            };
            core.add_track(*ssrc, rate);
        }
        // A laddered video track carries its send times: the viewer's
        // estimate of its link (REMB) comes from them.
        let send_time_id =
            crate::sdp::extmap::extension_id(&self.sdp, "video", crate::sdp::extmap::ABS_SEND_TIME);
        if let (Some(id), Some(_)) = (send_time_id, laddered) {
            let video = self.tracks.iter().find(|t| t.0 == RtpCodecKind::Video);
            if let Some((_, _, _, ssrc)) = video {
                core.stamp_send_time(*ssrc, id);
            }
        }
        let tracks = self
            .tracks
            .iter()
            .zip(&self.sources)
            .map(|((kind, sender, pt, ssrc), (_, source))| {
                let video = *kind == RtpCodecKind::Video;
                let mut out = TrackOut::new(
                    source.clone(),
                    video,
                    *pt,
                    *ssrc,
                    counters.clone(),
                    ForwardPolicy {
                        switch_at: media.switch_at,
                        ..ForwardPolicy::default()
                    },
                );
                if let Some(choice) = laddered.filter(|_| video) {
                    out = out.with_ladder(ladder(media, choice, &counters, self.made_at));
                }
                ConnTrack {
                    sender: *sender,
                    feed_key: feed_key(source),
                    feeds: Vec::new(),
                    out,
                }
            })
            .collect();
        let id = engine.next_id();
        let ufrag = self.ufrag;
        let conn = Conn {
            id,
            ufrag: ufrag.clone(),
            core,
            tracks,
            shared: shared.clone(),
            latency: media.latency.clone(),
            span: tracing::Span::current(),
            scheduled: None,
            addrs: Vec::new(),
            tcp_writers: Default::default(),
            remote: None,
            learned: Vec::new(),
            held_nomination: None,
            connected: false,
            ice_marked: false,
            answered_at: self.made_at,
            start_at: None,
            credentials: self
                .remote
                .0
                .zip(self.remote.1)
                .map(|(remote_ufrag, remote_pwd)| probe::Credentials {
                    local_ufrag: ufrag.clone(),
                    remote_ufrag,
                    remote_pwd,
                    controlling: self.controlling,
                }),
            probe: None,
            sampled: None,
        };
        engine.routes.register(&ufrag, shard.inbox.clone());
        // From here the connection lives in the shard: the viewer (or, if
        // this future is dropped first, its drop) hangs it up.
        let viewer = Viewer {
            id,
            rungs: laddered.map_or_else(Vec::new, |_| {
                media.rungs.iter().map(|r| r.name.clone()).collect()
            }),
            shard: shard.inbox.clone(),
            shared,
            state,
            closed: tokio::sync::OnceCell::new(),
            answer: self.sdp,
        };
        let (joined_tx, joined) = oneshot::channel();
        let stopped = || PeerError::Internal(anyhow::anyhow!("the media engine has stopped"));
        shard
            .inbox
            .send(Input::Join(Box::new(conn), joined_tx))
            .await
            .map_err(|_| stopped())?;
        joined.await.map_err(|_| stopped())?;
        Ok(viewer)
    }
}
