//! The restart policy of a stream: when FFmpeg exits, whether and after how
//! long to start it again. Pure: time and randomness are passed in.
//!
//! Exponential backoff with jitter between attempts, a cap on restarts within
//! a sliding window, and the backoff reset after a run that stayed up long
//! enough to count as healthy.

use crate::profile::restart::{Policy, RestartConfig};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How one FFmpeg run ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    /// Exit status 0 (or a stop ffwhep asked for).
    pub clean: bool,
    pub ran_for: Duration,
}

/// What to do after a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The policy does not restart after this kind of end.
    Stop,
    /// Too many restarts within the window.
    Exhausted { restarts: usize, window: Duration },
    /// Start again after this delay; `attempt` counts restarts since the last reset.
    RestartAfter { delay: Duration, attempt: u32 },
}

/// The restart state of one stream.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: RestartConfig,
    /// Restarts since the backoff was last reset.
    attempt: u32,
    /// When each restart within the window was decided.
    recent: VecDeque<Instant>,
}

impl Backoff {
    pub fn new(cfg: RestartConfig) -> Self {
        Self {
            cfg,
            attempt: 0,
            recent: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.cfg.policy
    }

    /// Decides what follows a run that ended at `now`. `unit` is a random
    /// number in [0, 1) for the jitter.
    pub fn after(&mut self, end: RunEnd, now: Instant, unit: f64) -> Decision {
        let wanted = match self.cfg.policy {
            Policy::Never => false,
            Policy::OnFailure => !end.clean,
            Policy::Always => true,
        };
        if !wanted {
            return Decision::Stop;
        }
        if end.ran_for >= self.cfg.healthy_after.0 {
            self.attempt = 0;
        }
        let window = self.cfg.window.0;
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.cfg.max_attempts as usize {
            return Decision::Exhausted {
                restarts: self.recent.len(),
                window,
            };
        }
        let base = self.cfg.initial_delay.0.as_secs_f64()
            * self.cfg.factor.0.powi(self.attempt.min(64) as i32);
        let capped = base.min(self.cfg.max_delay.0.as_secs_f64());
        let jitter = self.cfg.jitter.0 * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let delay = Duration::try_from_secs_f64((capped * (1.0 + jitter)).max(0.0))
            .unwrap_or(self.cfg.max_delay.0);
        self.attempt += 1;
        self.recent.push_back(now);
        Decision::RestartAfter {
            delay,
            attempt: self.attempt,
        }
    }
}

#[cfg(test)]
#[path = "restart_tests.rs"]
mod tests;
