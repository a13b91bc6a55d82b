//! The registry of streams: what each one is doing (state, runs, exits,
//! progress, ports, sources) and its viewer sessions. The stream lifecycle
//! writes it; HTTP (WHEP, status, metrics) reads it. The lock is never held
//! across an await.

use super::push::Push;
pub(crate) use super::record::{Guard, Limits, Published, Session, State, StreamInfo, Unavailable};
use crate::admission::Admission;
use crate::auth::{self, Denied, Secret};
use crate::engine::{Engine, SentTotals, Viewer};
use crate::ffmpeg::args::LegPorts;
use crate::ffmpeg::progress::Progress;
use crate::hooks::Hooks;
use crate::hooks::event::Event;
use crate::latency::Histogram;
use crate::profile::hooks::EventKind;
use crate::snapshot::{SnapshotCounts, StreamSnapshots};
use crate::source::SourceStats;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Seconds a client is told to wait when no restart time is known (the
/// stream is starting or tearing down).
const RETRY_AFTER_SECS: u64 = 1;

struct Slot {
    media: Option<Published>,
    guard: Guard,
    max_viewers: Option<usize>,
    /// When the next run is due, while the stream waits to restart.
    next_run: Option<Instant>,
    sessions: HashMap<String, Session>,
    info: StreamInfo,
    /// The stream's snapshots: the last picture, its lock, its counters.
    pictures: Arc<StreamSnapshots>,
    /// Told what happens to the stream.
    hooks: Arc<Hooks>,
}

impl Slot {
    fn new() -> Self {
        Self {
            media: None,
            guard: Guard::Open,
            max_viewers: None,
            next_run: None,
            sessions: HashMap::new(),
            info: StreamInfo {
                state: State::Starting,
                runs: 0,
                last_exit: None,
                exits: BTreeMap::new(),
                progress: None,
                live: false,
                ports: None,
                sources: Vec::new(),
                sent: SentTotals::default(),
                latency: Arc::default(),
                sessions: Vec::new(),
                gop_cache: None,
                tasks: 0,
                snapshots: SnapshotCounts::default(),
                admissions: None,
                hooks: None,
                pushes: Vec::new(),
            },
            pictures: Arc::default(),
            hooks: Arc::default(),
        }
    }
}

impl Slot {
    fn tell_leave(&self, id: &str, session: &str, gone: &Session, reason: &str) {
        self.hooks.tell(Event {
            run: self.media.as_ref().map(|m| m.run),
            viewer: Some(label(session)),
            remote: Some(gone.remote.to_string()),
            viewers: Some(self.sessions.len()),
            reason: Some(reason.to_owned()),
            ..Event::new(EventKind::ViewerLeave, id)
        });
    }
}

/// A session's label in logs and hooks: the first 8 digits, never the
/// whole session id (its URL's secret).
fn label(session: &str) -> String {
    session.get(..8).unwrap_or(session).to_owned()
}

/// Every stream this process serves, and their viewers.
pub struct Streams {
    pub peer: Engine,
    /// The token for every stream without its own, and for status/metrics.
    global_token: Option<Secret>,
    limits: Limits,
    /// Permits for viewers being set up at once.
    pub setups: Arc<tokio::sync::Semaphore>,
    inner: Mutex<BTreeMap<String, Slot>>,
}

/// Whole seconds until `next_run`, at least 1.
fn retry_after(next_run: Option<Instant>) -> u64 {
    next_run
        .map_or(RETRY_AFTER_SECS, |at| {
            let left = at.saturating_duration_since(Instant::now());
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        })
        .max(1)
}

impl Streams {
    pub fn new(peer: Engine, global_token: Option<Secret>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            peer,
            global_token,
            setups: Arc::new(tokio::sync::Semaphore::new(limits.max_setups)),
            limits,
            inner: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        // Every update is a few field writes that cannot panic half-way, so
        // a poisoned lock still holds a consistent map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        self.lock().get_mut(id).map(f)
    }

    /// Makes `id` known, starting, with no media yet (POSTs get 409).
    /// `guard`: who may watch; `max_viewers` its own viewer limit.
    pub fn declare(&self, id: &str, guard: Guard, max_viewers: Option<usize>, hooks: Arc<Hooks>) {
        let mut map = self.lock();
        let slot = map.entry(id.to_owned()).or_insert_with(Slot::new);
        slot.guard = guard;
        slot.max_viewers = max_viewers;
        slot.hooks = hooks;
    }

    /// The stream's WHIP pushes, for status.
    pub fn set_pushes(&self, id: &str, pushes: Vec<Arc<Push>>) {
        self.with(id, |s| s.info.pushes = pushes);
    }

    /// Tells the hooks of `id` about `event` (never waits).
    pub fn tell(&self, id: &str, event: Event) {
        if let Some(hooks) = self.with(id, |s| s.hooks.clone()) {
            hooks.tell(event);
        }
    }

    /// The service that admits viewers of `id`, when it has one.
    pub fn admission(&self, id: &str) -> Option<Arc<Admission>> {
        match self.lock().get(id).map(|s| &s.guard) {
            Some(Guard::Service(a)) => Some(a.clone()),
            _ => None,
        }
    }

    /// Whether `id` may take one more viewer under its and the global limit.
    fn room(map: &BTreeMap<String, Slot>, limits: Limits, id: &str) -> Result<(), Unavailable> {
        let slot = map.get(id).ok_or(Unavailable::UnknownStream)?;
        if slot
            .max_viewers
            .is_some_and(|max| slot.sessions.len() >= max)
        {
            return Err(Unavailable::Full);
        }
        let total: usize = map.values().map(|s| s.sessions.len()).sum();
        if limits.max_viewers.is_some_and(|max| total >= max) {
            return Err(Unavailable::Full);
        }
        Ok(())
    }

    /// Refuses early when `id` is at its viewer limit.
    pub fn has_room(&self, id: &str) -> Result<(), Unavailable> {
        Self::room(&self.lock(), self.limits, id)
    }

    /// Checks a request's `Authorization` for stream `id` (its own token,
    /// else the global one). An unknown stream is refused only while some
    /// stream has a token of its own; otherwise its 404 is the caller's.
    pub fn authorize(&self, id: &str, header: Option<&[u8]>) -> Result<(), Denied> {
        let token = {
            let map = self.lock();
            match map.get(id).map(|s| &s.guard) {
                Some(Guard::Token(t)) => Some(t.clone()),
                // The service decides when a session is asked for; a
                // session's own URL is its holder's.
                Some(Guard::Service(_)) => return Ok(()),
                Some(Guard::Open) => None,
                // While some stream is guarded, an unknown one is refused as
                // a guarded one would be: a 404 here and a 401 there would
                // tell a stranger which ids exist.
                None if map.values().any(|s| !matches!(s.guard, Guard::Open)) => {
                    return Err(if header.is_some() {
                        Denied::Wrong
                    } else {
                        Denied::Missing
                    });
                }
                None => None,
            }
        };
        auth::check(header, token.as_ref().or(self.global_token.as_ref()))
    }

    /// The snapshot pictures of stream `id`.
    pub fn pictures(&self, id: &str) -> Option<Arc<StreamSnapshots>> {
        self.lock().get(id).map(|s| s.pictures.clone())
    }

    /// Whether `id` is a stream of this process.
    pub fn knows(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Whether a request may learn of stream `id` (its name, state, viewers):
    /// it carries the stream's token or the global one, or none is needed.
    pub fn may_see(&self, id: &str, header: Option<&[u8]>) -> bool {
        let global = self.global_token.is_some() && self.authorize_global(header).is_ok();
        // A stream whose viewers a service admits is named to the global
        // token's holders only.
        global || (self.admission(id).is_none() && self.authorize(id, header).is_ok())
    }

    /// Checks a request's `Authorization` against the global token.
    pub fn authorize_global(&self, header: Option<&[u8]>) -> Result<(), Denied> {
        auth::check(header, self.global_token.as_ref())
    }

    /// A run is starting: its number and ports.
    pub fn run_starting(&self, id: &str, run: u32, ports: LegPorts) {
        self.with(id, |s| {
            s.info.state = State::Starting;
            s.info.runs = run;
            s.info.ports = Some(ports);
            s.info.live = false;
            s.info.progress = None;
        });
    }

    /// Puts live sources behind `id`: the stream is running.
    pub fn publish(&self, id: &str, media: Published, sources: Vec<(String, Arc<SourceStats>)>) {
        self.with(id, |s| {
            s.media = Some(media);
            s.next_run = None;
            s.info.state = State::Running;
            s.info.sources = sources;
        });
    }

    /// The stream's relay latency histogram.
    pub fn latency(&self, id: &str) -> Arc<Histogram> {
        self.with(id, |s| s.info.latency.clone())
            .unwrap_or_default()
    }

    /// The latest progress, and whether media is live.
    pub fn update_progress(&self, id: &str, progress: Option<Progress>, live: bool) {
        self.with(id, |s| {
            if progress.is_some() {
                s.info.progress = progress;
            }
            s.info.live = live;
        });
    }

    /// A run ended: counted by `reason`, described for status.
    pub fn record_exit(&self, id: &str, reason: &'static str, description: String) {
        self.with(id, |s| {
            *s.info.exits.entry(reason).or_default() += 1;
            s.info.last_exit = Some(description);
            s.info.live = false;
        });
    }

    /// Waits to restart at `at` (for `Retry-After`).
    pub fn wait_for_restart(&self, id: &str, at: Instant) {
        self.with(id, |s| {
            s.next_run = Some(at);
            s.info.state = State::Restarting;
        });
    }

    /// The stream has ended for good, in `state` (stopped or failed).
    pub fn finish(&self, id: &str, state: State) {
        self.with(id, |s| {
            if let Some(m) = s.media.take() {
                m.ended.cancel();
            }
            s.next_run = None;
            s.info.state = state;
            s.info.live = false;
        });
    }

    /// Takes the sources away from `id` and hands back every viewer, for the
    /// caller to hang up before it closes the sources.
    pub fn unpublish(&self, id: &str) -> Vec<Arc<Viewer>> {
        self.with(id, |s| {
            let gone: Vec<(String, Session)> = s.sessions.drain().collect();
            for (session, v) in &gone {
                s.info.sent += v.viewer.totals();
                s.tell_leave(id, session, v, "teardown");
            }
            if let Some(m) = s.media.take() {
                m.ended.cancel();
            }
            s.info.sources.clear();
            s.info.live = false;
            gone.into_iter().map(|(_, v)| v.viewer).collect()
        })
        .unwrap_or_default()
    }

    /// The current run's media behind `id`, or why there is none.
    pub fn media(&self, id: &str) -> Result<Published, Unavailable> {
        let map = self.lock();
        let slot = map.get(id).ok_or(Unavailable::UnknownStream)?;
        match (&slot.media, slot.info.state) {
            (Some(m), _) => Ok(m.clone()),
            (None, State::Stopped | State::Failed) => Err(Unavailable::Ended),
            (None, _) => Err(Unavailable::NotLive(retry_after(slot.next_run))),
        }
    }

    /// Registers a new session made for run `run`, and spawns `watcher` (which
    /// ends it when its connection does) among that run's tasks, in one step
    /// under the lock: the teardown either sees the session and waits for its
    /// watcher, or the session is refused. Refused when the run ended while
    /// the viewer was being made (409 with Retry-After), or the stream is
    /// full. Returns the number of viewers.
    pub fn add_session(
        &self,
        id: &str,
        session: &str,
        run: u32,
        new: Session,
        watcher: impl Future<Output = ()> + Send + 'static,
    ) -> Result<usize, Unavailable> {
        let mut map = self.lock();
        // Checked again here: other viewers may have been set up meanwhile.
        Self::room(&map, self.limits, id)?;
        let slot = map.get_mut(id).ok_or(Unavailable::UnknownStream)?;
        let published = match &slot.media {
            Some(p) if p.run == run => p,
            Some(_) | None => return Err(Unavailable::NotLive(retry_after(slot.next_run))),
        };
        published.tasks.spawn(watcher);
        let run = published.run;
        let remote = new.remote;
        slot.sessions.insert(session.to_owned(), new);
        let viewers = slot.sessions.len();
        slot.hooks.tell(Event {
            run: Some(run),
            viewer: Some(label(session)),
            remote: Some(remote.to_string()),
            viewers: Some(viewers),
            ..Event::new(EventKind::ViewerJoin, id)
        });
        Ok(viewers)
    }

    /// A session, for a request on its resource.
    pub fn session(&self, id: &str, session: &str) -> Option<Session> {
        self.lock().get(id)?.sessions.get(session).cloned()
    }

    /// Ends a session, for `reason` (told to the hooks).
    pub fn remove_session(&self, id: &str, session: &str, reason: &str) -> Option<Arc<Viewer>> {
        self.with(id, |s| {
            let gone = s.sessions.remove(session)?;
            s.info.sent += gone.viewer.totals();
            s.tell_leave(id, session, &gone, reason);
            Some(gone.viewer)
        })
        .flatten()
    }

    /// A copy of every stream's record, sessions included, by id.
    pub fn snapshot(&self) -> Vec<(String, StreamInfo)> {
        self.lock()
            .iter()
            .map(|(id, s)| {
                let mut info = s.info.clone();
                s.sessions
                    .values()
                    .for_each(|v| info.sent += v.viewer.totals());
                info.tasks = s.media.as_ref().map_or(0, |p| p.tasks.len())
                    + s.sessions.values().map(|v| v.viewer.tasks()).sum::<usize>();
                info.gop_cache = s
                    .media
                    .as_ref()
                    .and_then(|m| m.media.video.as_ref())
                    .and_then(|v| v.cache_state());
                info.sessions = s
                    .sessions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                info.sessions.sort_by_key(|(_, v)| v.joined);
                info.snapshots = s.pictures.stats.counts();
                info.hooks = s.hooks.any().then(|| s.hooks.counts());
                info.admissions = match &s.guard {
                    Guard::Service(a) => Some(a.counts()),
                    _ => None,
                };
                (id.clone(), info)
            })
            .collect()
    }
}
