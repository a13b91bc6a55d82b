use super::*;

const LADDER: [u64; 3] = [2_500_000, 700_000, 200_000];

/// A report with `lost` and a round trip of `rtt_ms` on a fresh sender
/// report.
fn rep(lost: f64, rtt_ms: Option<f64>) -> Report {
    Report {
        lost,
        rtt: rtt_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0)),
        sr_age: None,
    }
}

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Sends `bps` for `ms` in 1200-byte packets from `from`; the time after.
fn send(a: &mut Adapt, t0: Instant, from: u64, ms: u64, bps: u64) -> u64 {
    let packets = bps * ms / 1000 / 8 / 1200;
    for i in 0..packets {
        a.sent(1200, at(t0, from + i * ms / packets.max(1)));
    }
    from + ms
}

/// A controller on `rung` sent `bps` with the viewer estimating `remb`,
/// until its probe starts; it, and the time then (ms).
fn probing_on(rung: usize, bps: u64, remb: f64, t0: Instant) -> (Adapt, u64) {
    let mut a = Adapt::new(LADDER.to_vec(), rung, t0);
    let mut t = 0;
    while !a.probing(at(t0, t)) {
        t = send(&mut a, t0, t, 500, bps);
        a.remb(remb, at(t0, t));
        a.tick(at(t0, t));
    }
    (a, t)
}

/// One NACK a millisecond from `t` (ms), up to `n`, until the controller
/// steps; its step.
fn nack_until_a_step(a: &mut Adapt, t0: Instant, t: u64, n: u64) -> Step {
    for i in 0..n {
        let step = a.nacked(1, at(t0, t + i));
        if step != Step::Stay {
            return step;
        }
    }
    Step::Stay
}

#[test]
fn heavy_loss_steps_down_to_the_rung_that_fits_what_got_through() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    let t = send(&mut a, t0, 0, 2000, 2_500_000);
    assert_eq!(a.report(rep(0.0, Some(2.0)), at(t0, t)), Step::Stay);
    // A 1 Mb/s link: 60 % of 2.5 Mb/s is lost, behind a queue that grew.
    let t = send(&mut a, t0, t, 1000, 2_500_000);
    match a.report(rep(0.6, Some(250.0)), at(t0, t)) {
        Step::Switch { to, reason } => {
            assert_eq!(to, 1, "700k fits 1 Mb/s, 2.5M does not");
            assert!(reason.contains("loss 60%"), "{reason}");
        }
        s => panic!("{s:?}"),
    }
    let est = a.estimate_bps().unwrap();
    assert!((900_000.0..1_100_000.0).contains(&est), "{est}");
}

#[test]
fn reports_right_after_a_switch_are_not_held_against_the_new_rung() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    a.set_rung(1, at(t0, 1000));
    let t = send(&mut a, t0, 1000, 1000, 700_000);
    assert_eq!(
        a.report(rep(0.5, None), at(t0, t)),
        Step::Stay,
        "within the settling time"
    );
    let t = send(&mut a, t0, t, 1000, 700_000);
    assert_eq!(
        a.report(rep(0.5, None), at(t0, t)),
        Step::Stay,
        "one report"
    );
    let t = send(&mut a, t0, t, 1000, 700_000);
    assert!(matches!(
        a.report(rep(0.5, None), at(t0, t)),
        Step::Switch { to: 2, .. }
    ));
}

#[test]
fn a_clean_link_stays_on_the_top_rung() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    let mut t = 0;
    while t < 60_000 {
        t = send(&mut a, t0, t, 1000, 2_500_000);
        assert_eq!(a.tick(at(t0, t)), Step::Stay);
        assert_eq!(a.report(rep(0.0, Some(3.0)), at(t0, t)), Step::Stay);
        assert!(!a.probing(at(t0, t)), "nothing above the top rung to probe");
    }
}

#[test]
fn a_clean_probe_steps_up_and_one_that_draws_a_nack_does_not() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 2, t0);
    let mut t = 0;
    while !a.probing(at(t0, t)) {
        t = send(&mut a, t0, t, 500, 200_000);
        a.report(rep(0.0, Some(3.0)), at(t0, t));
        a.tick(at(t0, t));
        assert!(
            t <= PROBE_HOLD.as_millis() as u64 + 500,
            "no probe after a clean hold"
        );
    }
    let started = t;
    // Its budget is the next rung's extra rate over the time so far.
    let budget = a.probe_budget(at(t0, started + 500));
    let want = (700_000.0 - 200_000.0) * 1.1 / 8.0 * 0.5;
    assert!((budget as f64 - want).abs() < 2000.0, "{budget} vs {want}");
    a.probed(budget);
    assert!(a.probe_budget(at(t0, started + 500)) < 1200);
    assert_eq!(
        a.tick(at(t0, started + 1000)),
        Step::Stay,
        "judged by a report"
    );
    assert!(
        a.probe_ending(at(t0, started + 1000)),
        "a report at its end"
    );
    assert!(!a.probe_ending(at(t0, started + 1001)), "one");
    assert!(
        !a.probing(at(t0, started + 1001)),
        "its rate is added for a while"
    );
    match a.report(rep(0.0, Some(3.5)), at(t0, started + 1400)) {
        Step::Switch { to, reason } => {
            assert_eq!(to, 1);
            assert!(reason.contains("probe"), "{reason}");
        }
        s => panic!("{s:?}"),
    }
    // On rung 1 now: the next probe draws a NACK.
    a.set_rung(1, at(t0, started + 1400));
    let mut t = started + 1400;
    while !a.probing(at(t0, t)) {
        t = send(&mut a, t0, t, 500, 700_000);
        a.tick(at(t0, t));
    }
    a.nacked(1, at(t0, t + 100));
    assert_eq!(
        a.probe_budget(at(t0, t + 200)),
        0,
        "a NACK stops the probe at once"
    );
    assert_eq!(a.tick(at(t0, t + 200)), Step::Stay);
    assert!(!a.probing(at(t0, t + 200)));
    // The next probe waits longer after a failure.
    let failed = t + 200;
    let mut t = failed;
    while !a.probing(at(t0, t)) {
        t = send(&mut a, t0, t, 250, 700_000);
        a.tick(at(t0, t));
    }
    assert!(
        t - failed >= PROBE_HOLD_MAX.as_millis() as u64,
        "{}",
        t - failed
    );
}

#[test]
fn a_burst_of_nacks_steps_down_before_any_report() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    let t = send(&mut a, t0, 0, 2200, 2_500_000);
    let step = nack_until_a_step(&mut a, t0, t, 20);
    assert!(matches!(step, Step::Switch { to: 1, .. }), "{step:?}");
    // A NACK now and then is not a burst.
    let mut b = Adapt::new(LADDER.to_vec(), 0, t0);
    for k in 0..20 {
        let t = send(&mut b, t0, k * 500, 500, 2_500_000);
        assert_eq!(b.nacked(2, at(t0, t)), Step::Stay);
    }
}

#[test]
fn a_growing_round_trip_steps_down_one_rung() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    let mut t = 2000;
    for rtt in [20.0, 22.0, 400.0] {
        t = send(&mut a, t0, t, 1000, 2_500_000);
        assert_eq!(a.report(rep(0.0, Some(rtt)), at(t0, t)), Step::Stay);
    }
    t = send(&mut a, t0, t, 1000, 2_500_000);
    match a.report(rep(0.0, Some(450.0)), at(t0, t)) {
        Step::Switch { to, reason } => {
            assert_eq!(to, 1);
            assert!(reason.contains("round trip grew from 20"), "{reason}");
        }
        s => panic!("{s:?}"),
    }
}

#[test]
fn the_lowest_rung_is_the_floor() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 2, t0);
    let t = send(&mut a, t0, 2000, 1000, 200_000);
    assert_eq!(a.report(rep(0.7, None), at(t0, t)), Step::Stay);
    assert_eq!(a.overflowed(at(t0, t)), Step::Stay);
}

#[test]
fn one_lossy_report_without_a_queue_is_not_enough() {
    // A starved receiver drops what its socket cannot hold: loss in one
    // report, with the round trip at its floor, moves nothing; a second
    // lossy report does.
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    let mut t = 2000;
    t = send(&mut a, t0, t, 1000, 2_500_000);
    assert_eq!(a.report(rep(0.0, Some(2.0)), at(t0, t)), Step::Stay);
    t = send(&mut a, t0, t, 1000, 2_500_000);
    assert_eq!(a.report(rep(0.2, Some(2.5)), at(t0, t)), Step::Stay);
    t = send(&mut a, t0, t, 1000, 2_500_000);
    assert_eq!(a.report(rep(0.0, Some(2.0)), at(t0, t)), Step::Stay);
    t = send(&mut a, t0, t, 1000, 2_500_000);
    assert_eq!(a.report(rep(0.2, Some(2.0)), at(t0, t)), Step::Stay);
    t = send(&mut a, t0, t, 1000, 2_500_000);
    assert!(matches!(
        a.report(rep(0.2, Some(2.0)), at(t0, t)),
        Step::Switch { .. }
    ));
}

#[test]
fn an_estimate_that_falls_well_under_what_is_sent_steps_down_to_fit_it() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    let t = send(&mut a, t0, 0, 3000, 2_500_000);
    // Climbing from what it got, the viewer's estimate says nothing yet.
    assert_eq!(a.remb(2_600_000.0, at(t0, t)), Step::Stay);
    // The link shrank to 1 Mb/s: its queue grows, its estimate falls to
    // 0.85 of what gets through.
    let t = send(&mut a, t0, t, 100, 2_500_000);
    assert_eq!(
        a.remb(850_000.0, at(t0, t)),
        Step::Stay,
        "once is not enough"
    );
    let t = send(&mut a, t0, t, 100, 2_500_000);
    assert_eq!(a.remb(840_000.0, at(t0, t)), Step::Stay, "too soon after");
    let t = send(&mut a, t0, t, 100, 2_500_000);
    match a.remb(830_000.0, at(t0, t)) {
        Step::Switch { to, reason } => {
            assert_eq!(to, 1, "700k fits 830k with headroom... {reason}");
            assert!(reason.contains("estimate of 830 kb/s"), "{reason}");
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(a.estimate_bps(), Some(830_000.0));
}

#[test]
fn an_estimate_near_what_is_sent_or_climbing_after_a_step_up_moves_nothing() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 0, t0);
    let mut t = send(&mut a, t0, 0, 2000, 2_500_000);
    // A receiver that saw its delay jump (a busy host) estimates 0.85 of
    // what it gets: on a clean link, of all that is sent.
    for est in [2_900_000.0, 2_125_000.0, 2_100_000.0, 2_050_000.0] {
        t = send(&mut a, t0, t, 200, 2_500_000);
        assert_eq!(a.remb(est, at(t0, t)), Step::Stay, "{est}");
    }
    // After a step up, its estimate climbs from the rung below's rate:
    // under what is sent now, but never falling.
    a.set_rung(2, at(t0, t));
    t = send(&mut a, t0, t, 3000, 200_000);
    assert_eq!(a.remb(290_000.0, at(t0, t)), Step::Stay);
    a.set_rung(1, at(t0, t));
    let mut est = 300_000.0;
    for _ in 0..20 {
        t = send(&mut a, t0, t, 200, 700_000);
        est *= 1.02;
        assert_eq!(a.remb(est, at(t0, t)), Step::Stay, "{est}");
    }
}

#[test]
fn a_falling_estimate_fails_a_probe() {
    let t0 = Instant::now();
    let (mut a, t) = probing_on(2, 200_000, 300_000.0, t0);
    assert_eq!(a.remb(310_000.0, at(t0, t + 100)), Step::Stay);
    assert!(
        a.probing(at(t0, t + 100)),
        "a rising estimate is no trouble"
    );
    assert_eq!(a.remb(250_000.0, at(t0, t + 200)), Step::Stay);
    assert!(!a.probing(at(t0, t + 200)), "a falling one fails it");
    assert_eq!(a.probe_budget(at(t0, t + 300)), 0);
}

#[test]
fn the_send_rate_is_that_of_the_last_second() {
    let t0 = Instant::now();
    let mut r = SendRate::new(t0);
    r.add(1000, t0);
    assert_eq!(r.bps(at(t0, 500)), None, "not a second yet");
    for ms in (0..3000).step_by(10) {
        r.add(1250, at(t0, ms)); // 1 Mb/s
    }
    let bps = r.bps(at(t0, 3000)).unwrap();
    assert!((900_000.0..1_100_000.0).contains(&bps), "{bps}");
    // Half a second of nothing: half the rate; two seconds: none.
    let bps = r.bps(at(t0, 3500)).unwrap();
    assert!((400_000.0..600_000.0).contains(&bps), "{bps}");
    assert_eq!(r.bps(at(t0, 5000)), Some(0.0));
}

#[test]
fn a_probe_that_makes_the_estimate_fall_fails_and_moves_nothing_but_a_lasting_fall_does() {
    let t0 = Instant::now();
    let (mut a, mut t) = probing_on(1, 700_000, 900_000.0, t0);
    // The probe's queue: the estimate falls to a share of the rung's own
    // rate (the duplicates were never counted), again and again.
    for est in [500_000.0, 450_000.0, 400_000.0] {
        t = send(&mut a, t0, t, 100, 700_000);
        assert_eq!(a.remb(est, at(t0, t)), Step::Stay, "{est}");
    }
    assert!(!a.probing(at(t0, t)), "the probe failed");
    assert_eq!(a.tick(at(t0, t)), Step::Stay);
    // Past its aftermath, an estimate that still falls is the link's.
    t = send(
        &mut a,
        t0,
        t,
        PROBE_AFTERMATH.as_millis() as u64 + 100,
        700_000,
    );
    assert_eq!(a.remb(300_000.0, at(t0, t)), Step::Stay);
    t = send(&mut a, t0, t, 200, 700_000);
    match a.remb(290_000.0, at(t0, t)) {
        Step::Switch { to, .. } => assert_eq!(to, 2),
        s => panic!("{s:?}"),
    }
}

#[test]
fn no_probe_while_a_queue_is_still_on_the_path() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 1, t0);
    let mut t = send(&mut a, t0, 0, 2500, 700_000);
    a.report(rep(0.0, Some(5.0)), at(t0, t));
    // Down a rung; the queue the switch left drains slowly: 150 ms over
    // the floor, report after report, and no loss.
    a.set_rung(2, at(t0, t));
    for _ in 0..8 {
        t = send(&mut a, t0, t, 500, 200_000);
        a.report(rep(0.0, Some(155.0)), at(t0, t));
        a.tick(at(t0, t));
        assert!(!a.probing(at(t0, t)), "a probe at {t} ms into a queue");
    }
    // Drained: a clean hold, then the probe.
    while !a.probing(at(t0, t)) {
        t = send(&mut a, t0, t, 500, 200_000);
        a.report(rep(0.0, Some(6.0)), at(t0, t));
        a.tick(at(t0, t));
        assert!(t <= 2500 + 4000 + 2500, "no probe once drained");
    }
}

#[test]
fn a_burst_of_nacks_estimates_the_link_from_what_got_through() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 1, t0);
    // Clean reports: the link carried the rung.
    let mut t = 0;
    for _ in 0..3 {
        t = send(&mut a, t0, t, 1000, 700_000);
        assert_eq!(a.report(rep(0.0, Some(40.0)), at(t0, t)), Step::Stay);
    }
    assert!(!a.overloaded());
    // The link shrank to half: as many NACKs as packets got through.
    t = send(&mut a, t0, t, 200, 700_000);
    let step = nack_until_a_step(&mut a, t0, t, 40);
    assert!(matches!(step, Step::Switch { to: 2, .. }), "{step:?}");
    let estimate = a.estimate_bps().unwrap();
    assert!((200_000.0..500_000.0).contains(&estimate), "{estimate}");
    assert!(a.overloaded(), "the rung it leaves stops at once");
}

#[test]
fn a_link_that_shrinks_during_a_probe_is_not_hidden_by_it() {
    let t0 = Instant::now();
    let (mut a, mut t) = probing_on(1, 700_000, 900_000.0, t0);
    // The estimate falls: the probe fails at once, and moves nothing.
    t = send(&mut a, t0, t, 100, 700_000);
    assert_eq!(a.remb(500_000.0, at(t0, t)), Step::Stay);
    assert!(!a.probing(at(t0, t)));
    let failed = t;
    // It goes on falling past the probe's aftermath, with no report or
    // tick in between: the link's own, and down.
    let mut step = Step::Stay;
    for est in [300_000.0, 200_000.0, 150_000.0, 120_000.0] {
        t = send(&mut a, t0, t, 200, 700_000);
        step = a.remb(est, at(t0, t));
        if step != Step::Stay {
            break;
        }
    }
    assert!(matches!(step, Step::Switch { to: 2, .. }), "{step:?}");
    let after = t - failed;
    assert!(
        after <= PROBE_AFTERMATH.as_millis() as u64 + 400,
        "{after} ms after the probe failed"
    );
}

#[test]
fn a_clean_report_before_a_step_down_is_made_does_not_undo_the_estimate() {
    let t0 = Instant::now();
    let mut a = Adapt::new(LADDER.to_vec(), 1, t0);
    let mut t = 0;
    while t < 3000 {
        t = send(&mut a, t0, t, 500, 700_000);
        a.remb(900_000.0, at(t0, t));
    }
    let mut step = Step::Stay;
    for est in [300_000.0, 250_000.0, 240_000.0] {
        t = send(&mut a, t0, t, 100, 700_000);
        step = a.remb(est, at(t0, t));
    }
    assert!(matches!(step, Step::Switch { to: 2, .. }), "{step:?}");
    assert!(a.overloaded());
    // The switch waits for its keyframe; a report with little loss comes
    // (resends filled the gaps): the rung being left is no floor.
    t = send(&mut a, t0, t, 300, 700_000);
    assert_eq!(a.report(rep(0.0, Some(40.0)), at(t0, t)), Step::Stay);
    assert!(a.overloaded(), "{:?}", a.estimate_bps());
    // Made: clean reports count again.
    a.set_rung(2, at(t0, t));
    t = send(&mut a, t0, t, 2500, 200_000);
    a.report(rep(0.0, Some(40.0)), at(t0, t));
    assert!(a.estimate_bps().unwrap() >= 200_000.0);
}
