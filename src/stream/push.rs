//! One WHIP push of a stream: for each run, once its media is live, the
//! stream is offered to the endpoint and sent over a connection of the
//! media engine (one more consumer of the sources, the GOP cache first);
//! a push that fails (HTTP, ICE, a vanished SFU) is retried with backoff,
//! honouring `Retry-After`, and never fails the stream. Its resource is
//! DELETEd when the run ends.

use super::registry::Streams;
use super::restart::{Backoff, Decision, RunEnd};
use crate::auth::Secret;
use crate::engine::{PushOffer, SentTotals, StreamMedia, Viewer, ViewerReport, offer_push};
use crate::hooks::event::Event;
use crate::outbound::Outbound;
use crate::profile::hooks::EventKind;
use crate::profile::whip::WhipConfig;
use crate::whip::{self, PushError, Resource};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long the hang-up of a push waits for its DELETE to be answered.
const DELETE_FIRST: Duration = Duration::from_secs(2);
/// The longest one WHIP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a push is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    /// Waiting for the run's media to be live.
    Waiting,
    Connecting,
    Connected,
    /// Waiting out the backoff after a failure.
    Retrying,
    /// The run (or the stream) ended.
    Stopped,
}

impl PushState {
    pub fn name(self) -> &'static str {
        match self {
            PushState::Waiting => "waiting",
            PushState::Connecting => "connecting",
            PushState::Connected => "connected",
            PushState::Retrying => "retrying",
            PushState::Stopped => "stopped",
        }
    }
}

/// A push, for /status and /metrics.
#[derive(Debug, Clone, Serialize)]
pub struct PushStatus {
    /// The endpoint, without user information or query (which may hold
    /// secrets).
    pub url: String,
    pub state: PushState,
    /// Attempts to publish, over the stream's life.
    pub attempts: u64,
    /// Times the push was connected.
    pub connects: u64,
    pub last_error: Option<String>,
    /// Unix time in seconds when the current connection came up.
    pub connected_since: Option<f64>,
    /// What the push sent over the stream's life.
    pub sent: SentTotals,
    /// The current connection: packets, NACKs, RTT, remote address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ViewerReport>,
}

/// One endpoint a stream is pushed to.
pub(crate) struct Push {
    pub index: usize,
    url: String,
    token: Option<Secret>,
    config: WhipConfig,
    client: Outbound,
    status: Mutex<PushStatus>,
    /// The connection of the current attempt.
    current: Mutex<Option<Arc<Viewer>>>,
    /// Its state, for those who wait on one.
    state: watch::Sender<PushState>,
}

/// What a run gives its pushes.
pub(crate) struct PushRun {
    pub streams: Arc<Streams>,
    pub id: String,
    pub run: u32,
    pub media: StreamMedia,
    /// True once the run's media is live.
    pub live: watch::Receiver<bool>,
    /// Cancelled when the run ends.
    pub ended: CancellationToken,
    /// Where the DELETEs at the end go (the run's teardown waits for them
    /// after the sources are closed).
    pub tasks: TaskTracker,
}

impl Push {
    pub fn new(index: usize, config: WhipConfig, token: Option<Secret>) -> Self {
        let url = crate::outbound::redact(&config.url);
        Self {
            index,
            // Any: a redirect may lead from http to https.
            client: Outbound::any(),
            status: Mutex::new(PushStatus {
                url: url.clone(),
                state: PushState::Waiting,
                attempts: 0,
                connects: 0,
                last_error: None,
                connected_since: None,
                sent: SentTotals::default(),
                connection: None,
            }),
            current: Mutex::new(None),
            state: watch::Sender::new(PushState::Waiting),
            url,
            token,
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PushStatus> {
        // Field writes only: a poisoned lock still holds a whole status.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Option<Arc<Viewer>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `v` the current connection; the one before is folded into
    /// the totals under the same lock that `counts` reads them with.
    fn set_current(&self, v: Option<Arc<Viewer>>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = std::mem::replace(&mut *current, v) {
            self.lock().sent += old.totals();
        }
    }

    /// The push's status, without its connection's report.
    pub fn counts(&self) -> PushStatus {
        // The current connection and the totals together: a connection is
        // counted in one or the other, never both.
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = self.lock().clone();
        if let Some(v) = current.as_ref() {
            s.sent += v.totals();
        }
        s
    }

    /// The push's status, with its current connection's report.
    pub async fn status(&self) -> PushStatus {
        let viewer = self.current();
        let mut s = self.counts();
        if let Some(v) = viewer {
            s.connection = Some(v.report().await);
        }
        s
    }

    /// Resolves once the push is in `state` (false if it never can be).
    pub fn reached(&self, state: PushState) -> impl Future<Output = bool> + Send + use<> {
        let mut rx = self.state.subscribe();
        async move { rx.wait_for(|s| *s == state).await.is_ok() }
    }

    /// Moves to `state`, and tells the hooks.
    fn enter(&self, state: PushState, reason: Option<String>, at: &PushRun) {
        {
            let mut s = self.lock();
            if s.state == state && reason.is_none() {
                return;
            }
            s.state = state;
            if state == PushState::Connected {
                s.connects += 1;
                s.connected_since = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs_f64());
            } else {
                s.connected_since = None;
            }
            if let Some(r) = &reason {
                s.last_error = Some(r.clone());
            }
        }
        self.state.send_replace(state);
        at.streams.tell(
            &at.id,
            Event {
                run: Some(at.run),
                push: Some(self.index),
                push_url: Some(self.url.clone()),
                push_state: Some(state.name()),
                reason,
                ..Event::new(EventKind::PushState, &at.id)
            },
        );
    }

    /// Publishes the run's media until the run ends, retrying failures.
    pub async fn run(self: Arc<Self>, mut at: PushRun) {
        let span = tracing::info_span!("push", stream = %at.id, push = self.index, url = %self.url);
        let _ = tracing::Instrument::instrument(self.clone().serve(&mut at), span).await;
        self.enter(PushState::Stopped, None, &at);
    }

    async fn serve(self: Arc<Self>, at: &mut PushRun) {
        self.enter(PushState::Waiting, None, at);
        tokio::select! {
            live = at.live.wait_for(|l| *l) => if live.is_err() { return },
            _ = at.ended.cancelled() => return,
        }
        let mut backoff = Backoff::new(self.config.retry.clone());
        loop {
            self.lock().attempts += 1;
            self.enter(PushState::Connecting, None, at);
            tracing::info!("push: publishing");
            let started = Instant::now();
            let failure = self.attempt(at).await;
            let Some(failure) = failure else { return };
            let end = RunEnd {
                clean: false,
                ran_for: started.elapsed(),
            };
            let unit = rand::random::<f64>();
            let delay = match backoff.after(end, Instant::now(), unit) {
                Decision::RestartAfter { delay, .. } => delay,
                Decision::Stop | Decision::Exhausted { .. } => self.config.retry.max_delay.0,
            };
            let delay = failure.retry_after().map_or(delay, |r| r.max(delay));
            let attempts = self.lock().attempts;
            tracing::warn!(attempts, delay_ms = delay.as_millis() as u64, reason = %failure, "push failed; retrying after the delay");
            self.enter(PushState::Retrying, Some(failure.to_string()), at);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = at.ended.cancelled() => return,
            }
        }
    }

    /// One attempt: publish, connect, stay up until the connection ends
    /// (the failure) or the run does (`None`).
    async fn attempt(&self, at: &PushRun) -> Option<PushError> {
        let (offer, resource) = match self.publish(at).await {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => return Some(e),
        };
        tracing::info!("push: the endpoint answered");
        tokio::select! {
            _ = self.trickle_reflexive(at, offer.shard(), &offer.offer, &resource) => {}
            _ = at.ended.cancelled() => {
                self.release(None, resource, at).await;
                return None;
            }
        }
        let engine = &at.streams.peer;
        let viewer = match offer.connect(engine, &at.media, &resource.answer).await {
            Ok(v) => Arc::new(v),
            Err(e) => {
                self.release(None, resource, at).await;
                return Some(PushError::Protocol(format!("the answer: {e}")));
            }
        };
        self.set_current(Some(viewer.clone()));
        let failure = self.stay_up(&viewer, at).await;
        self.release(Some(viewer), resource, at).await;
        failure
    }

    /// Makes the offer and POSTs it. A run that ends meanwhile gives
    /// `None`: a POST already sent is left to finish among the run's tasks,
    /// and the resource it makes is DELETEd.
    async fn publish(&self, at: &PushRun) -> Result<Option<(PushOffer, Resource)>, PushError> {
        let offer = tokio::select! {
            o = offer_push(&at.streams.peer, &at.media) => o,
            _ = at.ended.cancelled() => return Ok(None),
        };
        let offer = offer.map_err(|e| PushError::Protocol(format!("making the offer: {e}")))?;
        let (client, url, token, sdp) = (
            self.client.clone(),
            self.config.url.clone(),
            self.token.clone(),
            offer.offer.clone(),
        );
        let mut post = tokio::spawn(async move {
            whip::publish(&client, &url, token.as_ref(), &sdp, REQUEST_TIMEOUT).await
        });
        tokio::select! {
            done = &mut post => match done {
                Ok(published) => published.map(|r| Some((offer, r))),
                Err(e) => Err(PushError::Protocol(format!("the request failed: {e}"))),
            },
            _ = at.ended.cancelled() => {
                let (client, token) = (self.client.clone(), self.token.clone());
                at.tasks.spawn(async move {
                    if let Ok(Ok(resource)) = post.await {
                        delete(&client, &resource, token.as_ref()).await;
                    }
                }.in_current_span());
                Ok(None)
            }
        }
    }

    /// Trickles the candidates the endpoint's STUN servers see of us.
    async fn trickle_reflexive(
        &self,
        at: &PushRun,
        shard: usize,
        offer: &str,
        resource: &Resource,
    ) {
        if resource.ice_servers.iter().any(|s| s.starts_with("turn")) {
            tracing::info!(
                "the endpoint suggests TURN servers: not used (the media engine gathers no relay candidates)"
            );
        }
        let fragment = at
            .streams
            .peer
            .reflexive_fragment(shard, offer, &resource.ice_servers)
            .await;
        if let Some(fragment) = fragment {
            let token = self.token.as_ref();
            match whip::trickle(&self.client, resource, token, fragment, REQUEST_TIMEOUT).await {
                Ok(()) => tracing::info!("push: server-reflexive candidates trickled"),
                Err(e) => tracing::warn!(error = %e, "push: trickling candidates failed"),
            }
        }
    }

    /// Waits for the connection to come up, then for it to end; `None`
    /// when the run ends first.
    async fn stay_up(&self, viewer: &Viewer, at: &PushRun) -> Option<PushError> {
        let setup = at.streams.peer.config.setup_timeout;
        let up = tokio::select! {
            up = tokio::time::timeout(setup, viewer.connected()) => up.unwrap_or(false),
            _ = at.ended.cancelled() => return None,
        };
        if !up {
            return Some(PushError::Connection(format!(
                "ICE/DTLS with the SFU did not come up within {} s",
                setup.as_secs_f64()
            )));
        }
        let report = viewer.report().await;
        tracing::info!(
            remote = report.remote.as_deref(),
            dtls_ms = report.start.dtls_ms,
            "push connected"
        );
        self.enter(PushState::Connected, None, at);
        tokio::select! {
            why = viewer.ended(setup) => Some(PushError::Connection(format!(
                "the connection to the SFU ended ({why})"
            ))),
            _ = at.ended.cancelled() => None,
        }
    }

    /// Ends the attempt: DELETEs its resource and hangs up its connection.
    /// The DELETE goes first (so the endpoint ends the session at our
    /// request, not by noticing the hang-up), given `DELETE_FIRST` before
    /// the hang-up follows; it finishes among the run's tasks (the teardown
    /// waits for those last).
    async fn release(&self, viewer: Option<Arc<Viewer>>, resource: Resource, at: &PushRun) {
        let (client, token) = (self.client.clone(), self.token.clone());
        let mut deleting = tokio::spawn(
            async move { delete(&client, &resource, token.as_ref()).await }.in_current_span(),
        );
        let Some(v) = viewer else {
            at.tasks.spawn(async move {
                let _ = deleting.await;
            });
            return;
        };
        let deleted = tokio::time::timeout(DELETE_FIRST, &mut deleting)
            .await
            .is_ok();
        if !deleted {
            at.tasks.spawn(async move {
                let _ = deleting.await;
            });
        }
        v.hang_up().await;
        self.set_current(None);
    }
}

/// DELETEs a resource, saying how it went.
async fn delete(client: &Outbound, resource: &Resource, token: Option<&Secret>) {
    match whip::delete(client, resource, token, REQUEST_TIMEOUT).await {
        Ok(()) => tracing::info!("push: resource deleted"),
        Err(e) => tracing::warn!(error = %e, "push: the resource could not be deleted"),
    }
}
