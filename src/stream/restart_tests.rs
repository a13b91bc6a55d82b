use super::*;
use crate::profile::restart::{Factor, Fraction, Secs};

fn cfg(policy: Policy) -> RestartConfig {
    RestartConfig {
        policy,
        initial_delay: Secs(Duration::from_secs(1)),
        factor: Factor(2.0),
        max_delay: Secs(Duration::from_secs(10)),
        jitter: Fraction(0.0),
        max_attempts: 5,
        window: Secs(Duration::from_secs(60)),
        healthy_after: Secs(Duration::from_secs(30)),
    }
}

const FAIL: RunEnd = RunEnd {
    clean: false,
    ran_for: Duration::from_secs(1),
};
const CLEAN: RunEnd = RunEnd {
    clean: true,
    ran_for: Duration::from_secs(1),
};

fn delay(d: Decision) -> Duration {
    match d {
        Decision::RestartAfter { delay, .. } => delay,
        other => panic!("expected a restart, got {other:?}"),
    }
}

#[test]
fn never_stops_and_on_failure_skips_clean_ends() {
    let now = Instant::now();
    assert_eq!(
        Backoff::new(cfg(Policy::Never)).after(FAIL, now, 0.5),
        Decision::Stop
    );
    let mut b = Backoff::new(cfg(Policy::OnFailure));
    assert_eq!(b.after(CLEAN, now, 0.5), Decision::Stop);
    assert_eq!(delay(b.after(FAIL, now, 0.5)), Duration::from_secs(1));
    let mut a = Backoff::new(cfg(Policy::Always));
    assert_eq!(delay(a.after(CLEAN, now, 0.5)), Duration::from_secs(1));
}

#[test]
fn delays_grow_by_the_factor_up_to_the_cap() {
    let mut b = Backoff::new(cfg(Policy::OnFailure));
    let mut now = Instant::now();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let d = delay(b.after(FAIL, now, 0.5));
        seen.push(d.as_secs());
        now += d + Duration::from_secs(1);
    }
    assert_eq!(seen, [1, 2, 4, 8, 10]);
}

#[test]
fn jitter_stays_within_its_fraction() {
    let mut c = cfg(Policy::Always);
    c.jitter = Fraction(0.2);
    let now = Instant::now();
    let low = delay(Backoff::new(c.clone()).after(FAIL, now, 0.0));
    let high = delay(Backoff::new(c.clone()).after(FAIL, now, 0.999_999));
    assert_eq!(low, Duration::from_millis(800));
    assert!(
        high > Duration::from_millis(1199) && high <= Duration::from_millis(1200),
        "{high:?}"
    );
}

#[test]
fn too_many_restarts_in_the_window_exhaust() {
    let mut b = Backoff::new(cfg(Policy::OnFailure));
    let now = Instant::now();
    for _ in 0..5 {
        delay(b.after(FAIL, now, 0.5));
    }
    assert_eq!(
        b.after(FAIL, now, 0.5),
        Decision::Exhausted {
            restarts: 5,
            window: Duration::from_secs(60)
        }
    );
    // Once the window has moved past them, restarts are allowed again.
    assert!(matches!(
        b.after(FAIL, now + Duration::from_secs(61), 0.5),
        Decision::RestartAfter { .. }
    ));
}

#[test]
fn a_healthy_run_resets_the_backoff() {
    let mut b = Backoff::new(cfg(Policy::OnFailure));
    let now = Instant::now();
    for _ in 0..3 {
        delay(b.after(FAIL, now, 0.5));
    }
    let healthy = RunEnd {
        clean: false,
        ran_for: Duration::from_secs(31),
    };
    assert_eq!(
        b.after(healthy, now, 0.5),
        Decision::RestartAfter {
            delay: Duration::from_secs(1),
            attempt: 1
        }
    );
}
