//! Event hooks: a profile's `hooks:` run a command and/or POST JSON when a
//! run's media is ready, a viewer joins or leaves, FFmpeg exits, and a
//! restart is scheduled. Here the POSTs go to an HTTP receiver of the test's
//! own on loopback, and the commands write what they were told to a file.

mod common;

use axum::Json;
use axum::extract::State;
use common::Ffwhep;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the receiver was sent, in order; `hang` makes it never answer.
async fn receiver(hang: bool) -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app =
        axum::Router::new()
            .route(
                "/events",
                axum::routing::post(
                    move |State(tx): State<mpsc::UnboundedSender<Value>>,
                          Json(body): Json<Value>| async move {
                        let _ = tx.send(body);
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        "thanks"
                    },
                ),
            )
            .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// The next event POSTed; panics after a minute.
async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no event within 60 s")
        .expect("the receiver stopped")
}

/// The next event of `kind` (others before it are returned too, in order).
async fn until(rx: &mut mpsc::UnboundedReceiver<Value>, kind: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let e = next(rx).await;
        let done = e["event"] == kind;
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn events(seen: &[Value]) -> Vec<String> {
    seen.iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_runs_its_command_and_its_post() {
    let (url, mut rx) = receiver(false).await;
    let told = common::temp_file("told", "");
    let line = r#"echo "$FFWHEP_EVENT|$FFWHEP_STREAM|$FFWHEP_RUN|$FFWHEP_VIEWER|$FFWHEP_REMOTE|$FFWHEP_REASON|$FFWHEP_EXIT_CODE|$FFWHEP_SIGNAL|$FFWHEP_ATTEMPT" >> "$0""#;
    let profile = common::testsrc_profile(
        "hooked",
        &format!(
            "restart: {{policy: always, initial_delay: 0.2, jitter: 0}}\n\
             hooks:\n  - command: [sh, -c, '{line}', \"{}\"]\n    url: \"{url}\"\n",
            told.display()
        ),
    );
    let mut ff = Ffwhep::start(&[profile.to_str().unwrap()]);

    let seen = until(&mut rx, "ready").await;
    assert_eq!(events(&seen), ["ready"]);
    assert_eq!(seen[0]["stream"], "hooked");
    assert_eq!(seen[0]["run"], 1);

    // A viewer joins and leaves with DELETE.
    let v = common::connect(&ff.url).await;
    let join = next(&mut rx).await;
    assert_eq!(join["event"], "viewer_join", "{join}");
    assert_eq!(join["viewers"], 1);
    let label = join["viewer"].as_str().unwrap().to_owned();
    assert_eq!(label.len(), 8, "a label, not the session: {join}");
    assert!(v.location.contains(&label), "{} vs {label}", v.location);
    assert!(join["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    let deleted = reqwest::Client::new()
        .delete(format!("{}{}", ff.base(), v.location))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let leave = next(&mut rx).await;
    assert_eq!(leave["event"], "viewer_leave", "{leave}");
    assert_eq!(leave["reason"], "delete");
    assert_eq!(leave["viewer"], label.as_str());
    assert_eq!(leave["viewers"], 0);
    v.close().await;

    // FFmpeg is killed: exit, restart, and the next run's ready.
    common::kill(ff.ffmpeg_pid(), libc::SIGKILL);
    let seen = until(&mut rx, "ready").await;
    assert_eq!(events(&seen), ["exit", "restart", "ready"], "{seen:?}");
    assert_eq!(seen[0]["reason"], "killed");
    assert_eq!(seen[0]["signal"], libc::SIGKILL);
    assert_eq!(seen[0]["run"], 1);
    assert_eq!(seen[1]["attempt"], 1);
    assert_eq!(seen[1]["delay_ms"], 200);
    assert_eq!(seen[2]["run"], 2);

    // A viewer of run 2 is hung up by the stop's teardown.
    let v = common::connect(&ff.url).await;
    let join = next(&mut rx).await;
    assert_eq!(
        (join["event"].as_str(), join["run"].as_u64()),
        (Some("viewer_join"), Some(2))
    );
    // FFmpeg's exit is told when it happens, then the teardown's hang-ups.
    common::kill(ff.pid(), libc::SIGTERM);
    let seen = until(&mut rx, "viewer_leave").await;
    assert_eq!(events(&seen), ["exit", "viewer_leave"], "{seen:?}");
    assert_eq!(seen[0]["reason"], "stopped");
    assert_eq!(seen[1]["reason"], "teardown");
    assert_eq!(ff.wait_exit(Duration::from_secs(20)).code(), Some(143));
    v.close().await;

    // The command was told the same events, in the same order, before
    // ffwhep exited.
    let lines = std::fs::read_to_string(&told).unwrap();
    let fields: Vec<Vec<&str>> = lines.lines().map(|l| l.split('|').collect()).collect();
    let names: Vec<&str> = fields.iter().map(|f| f[0]).collect();
    assert_eq!(
        names,
        [
            "ready",
            "viewer_join",
            "viewer_leave",
            "exit",
            "restart",
            "ready",
            "viewer_join",
            "exit",
            "viewer_leave"
        ],
        "{lines}"
    );
    assert!(fields.iter().all(|f| f[1] == "hooked"), "{lines}");
    assert_eq!(fields[1][3], label, "{lines}");
    assert!(fields[1][4].starts_with("127.0.0.1:"), "{lines}");
    assert_eq!(fields[2][5], "delete", "{lines}");
    assert_eq!((fields[3][5], fields[3][7]), ("killed", "9"), "{lines}");
    assert_eq!(fields[4][8], "1", "{lines}");
    assert_eq!(fields[5][2], "2", "{lines}");
    assert_eq!(fields[7][5], "stopped", "{lines}");
    assert!(!fields[7][6].is_empty(), "an exit code: {lines}");
    assert_eq!(fields[8][5], "teardown", "{lines}");
    let log = ff.log();
    assert!(log.contains("hook ran"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_failing_hook_is_killed_and_counted_while_viewers_play() {
    let (url, mut rx) = receiver(false).await;
    let sleeper = common::temp_file("sleeper", "");
    let profile = common::testsrc_profile(
        "hanging",
        &format!(
            "hooks:\n\
             \x20 - events: [viewer_join]\n\
             \x20   command: [sh, -c, 'echo about to hang; sleep 300 & echo $! > \"$0\"; wait', \"{}\"]\n\
             \x20   timeout: 1s\n\
             \x20 - events: [viewer_join]\n\
             \x20   command: [/nonexistent/notify]\n\
             \x20 - events: [viewer_join, viewer_leave]\n\
             \x20   url: \"{url}\"\n",
            sleeper.display()
        ),
    );
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    let v = common::connect(&ff.url).await;
    // The POST hook is told at once: the hanging one does not hold it up.
    let join = next(&mut rx).await;
    assert_eq!(join["event"], "viewer_join");
    let status = common::StatusReader::new(&ff);
    status
        .wait("the hanging hook timed out, the missing one failed", |s| {
            let h = &s["streams"][0]["hooks"];
            h["timed_out"] == 1 && h["failed"] == 1 && h["ok"] == 1 && h["running"] == 0
        })
        .await;
    // Killed with its whole process group: its `sleep` child too.
    let pid: i32 = std::fs::read_to_string(&sleeper)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::wait_gone(pid, Duration::from_secs(10)),
        "the hook's child {pid} outlived it"
    );
    for line in [
        "hook stdout: about to hang",
        "hook timed out: killed",
        "hook failed: cannot start \"/nonexistent/notify\"",
    ] {
        ff.wait_log(Duration::from_secs(10), line, |l| l.contains(line));
    }
    // The viewer played through it all, and the stream goes on.
    let before = v.received().complete_frames();
    common::wait_for(&v, Duration::from_secs(20), "more frames", |r| {
        r.complete_frames() > before + 30
    })
    .await;
    let metrics = common::metrics(&ff, None).await;
    for want in [
        "ffwhep_hook_runs_total{result=\"timed_out\",stream=\"hanging\"} 1",
        "ffwhep_hook_runs_total{result=\"failed\",stream=\"hanging\"} 1",
        "ffwhep_hook_runs_total{result=\"ok\",stream=\"hanging\"} 1",
        "ffwhep_hook_events_dropped_total{stream=\"hanging\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_joins_drops_events_not_viewers() {
    const FLOOD: u64 = 12;
    let (url, mut rx) = receiver(true).await;
    let profile = common::testsrc_profile(
        "flooded",
        &format!(
            "hooks:\n  - events: [viewer_join]\n    url: \"{url}\"\n    timeout: 600s\n    queue: 2\n"
        ),
    );
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    let status = common::StatusReader::new(&ff);
    status
        .wait("live media", |s| s["streams"][0]["live"] == true)
        .await;
    let flood = (0..FLOOD).map(|_| common::post_offer(&ff.url, None));
    let answers = futures::future::join_all(flood).await;
    for (resp, _) in &answers {
        assert_eq!(resp.status(), 201);
    }
    // The hook holds the first event (its receiver never answers), two
    // wait in its queue, and the rest are dropped and counted.
    assert_eq!(next(&mut rx).await["event"], "viewer_join");
    status
        .wait("every join queued or dropped", |s| {
            let h = &s["streams"][0]["hooks"];
            h["queued"].as_u64().unwrap() + h["dropped"].as_u64().unwrap() == FLOOD
        })
        .await;
    let s = status.get().await;
    let h = &s["streams"][0]["hooks"];
    assert!(h["dropped"].as_u64().unwrap() >= FLOOD - 3, "{h}");
    assert_eq!(h["running"], 1, "{h}");
    ff.wait_log(Duration::from_secs(10), "the drop's log line", |l| {
        l.contains("hook queue full: event dropped")
    });
    // Viewers are not held up by it: a new one plays.
    let v = common::connect(&ff.url).await;
    common::wait_for(&v, Duration::from_secs(20), "frames", |r| {
        r.complete_frames() > 10
    })
    .await;
    v.close().await;
    for (_, offer) in answers {
        offer.pc.close().await.ok();
    }
}
