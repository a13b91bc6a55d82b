use super::access::{DEFAULT_SERVICE_TIMEOUT, ServiceConfig};
use super::*;

fn parse(yaml: &str) -> Result<Plan, ProfileError> {
    Plan::from_yaml(yaml, "p.yaml")
}

fn err(yaml: &str) -> ProfileError {
    parse(yaml).expect_err("profile should be rejected")
}

const MINIMAL: &str = "id: cam1\ninput:\n  - address: in.mp4\n";

#[test]
fn builtin_profile_is_valid_and_has_both_legs() {
    let plan = Plan::builtin().unwrap();
    assert_eq!(plan.id.as_str(), "testsrc");
    assert_eq!(plan.inputs.len(), 2);
    assert_eq!(plan.video.as_ref().unwrap().map, "0:v:0");
    assert_eq!(plan.audio.as_ref().unwrap().map, "1:a:0");
}

#[test]
fn defaults_fill_a_minimal_profile() {
    let plan = parse(MINIMAL).unwrap();
    let video = plan.video.unwrap();
    let audio = plan.audio.unwrap();
    assert_eq!(video.payload_type, 102);
    assert_eq!(audio.payload_type, 111);
    assert_eq!(video.map, "0:v:0");
    assert_eq!(audio.map, "0:a:0");
    assert_eq!(
        video.codec_args,
        default_video_encoder(Duration::from_secs(2))
    );
    assert_eq!(video.codec_args.last().unwrap(), "expr:gte(t,n_forced*2)");
    assert_eq!(plan.gop_cache, Some(DEFAULT_CACHE));
    assert_eq!(audio.codec_args, to_strings(DEFAULT_AUDIO_ENCODER));
    assert!(plan.outputs.is_empty());
    assert_ne!(video.ssrc, audio.ssrc);
    assert!(
        video.ssrc <= i32::MAX as u32,
        "FFmpeg takes -ssrc as a signed int"
    );
}

#[test]
fn overrides_are_taken() {
    let plan = parse(
        "id: cam1\ninput: [{address: rtsp://cam, options: [-rtsp_transport, tcp]}]\n\
         output: [{address: rec.mkv, options: [-c, copy]}]\noptions: [-y]\n\
         webrtc:\n  video_pt: 96\n  audio_pt: 97\n  video: {copy: true, ssrc: 42}\n  \
         audio: {encoder: [-c:a, libopus, -b:a, 32k]}\n",
    )
    .unwrap();
    assert_eq!(plan.global_options, ["-y"]);
    assert_eq!(plan.outputs[0].address, "rec.mkv");
    let video = plan.video.unwrap();
    assert_eq!((video.payload_type, video.ssrc), (96, 42));
    assert_eq!(video.codec_args, to_strings(VIDEO_COPY));
    assert_eq!(
        plan.audio.unwrap().codec_args,
        ["-c:a", "libopus", "-b:a", "32k"]
    );
}

#[test]
fn a_disabled_leg_is_not_planned() {
    let plan = parse(&format!("{MINIMAL}webrtc: {{audio: {{enabled: false}}}}\n")).unwrap();
    assert!(plan.video.is_some() && plan.audio.is_none());
    let plan = parse(&format!("{MINIMAL}webrtc: {{video: {{enabled: false}}}}\n")).unwrap();
    assert!(plan.video.is_none() && plan.audio.is_some());
    let plan = parse(&format!("{MINIMAL}webrtc: {{enabled: false}}\n")).unwrap();
    assert!(plan.video.is_none() && plan.audio.is_none());
}

#[test]
fn unknown_key_names_its_line_and_column() {
    let e = err("id: cam1\ninput:\n  - address: a\n    optoins: []\n");
    assert_eq!(e.position, Some((4, 5)), "{e}");
    assert!(e.message.contains("unknown field `optoins`"), "{e}");
    assert!(e.to_string().starts_with("p.yaml:4:5: "), "{e}");
}

#[test]
fn bad_stream_id_is_located() {
    let e = err("id: \"cam 1\"\ninput: [{address: a}]\n");
    assert_eq!(e.position, Some((1, 5)), "{e}");
    assert!(e.message.contains("invalid stream id"), "{e}");
}

#[test]
fn payload_type_out_of_range_is_located() {
    let e = err(&format!("{MINIMAL}webrtc:\n  video_pt: 300\n"));
    assert_eq!(e.position, Some((5, 13)), "{e}");
    assert!(e.message.contains("96 to 127"), "{e}");
}

#[test]
fn equal_payload_types_are_rejected() {
    let e = err(&format!(
        "{MINIMAL}webrtc:\n  video_pt: 100\n  audio_pt: 100\n"
    ));
    assert!(e.message.contains("both 100"), "{e}");
    assert_eq!(e.position, Some((5, 3)), "the webrtc section: {e}");
}

#[test]
fn copy_and_encoder_exclude_each_other() {
    let e = err(&format!(
        "{MINIMAL}webrtc:\n  video:\n    copy: true\n    encoder: [-c:v, libx264]\n"
    ));
    assert!(e.message.contains("exclude each other"), "{e}");
    assert!(e.position.is_some(), "{e}");
}

#[test]
fn both_legs_disabled_is_an_error() {
    let e = err(&format!(
        "{MINIMAL}webrtc:\n  video: {{enabled: false}}\n  audio: {{enabled: false}}\n"
    ));
    assert!(
        e.message.contains("both video and audio legs are disabled"),
        "{e}"
    );
}

#[test]
fn missing_input_and_wrong_types_are_located() {
    let e = err("id: cam1\n");
    assert!(e.message.contains("missing field `input`"), "{e}");
    let e = err("id: cam1\ninput: []\n");
    assert!(e.message.contains("at least one input"), "{e}");
    assert_eq!(e.position, Some((2, 8)), "{e}");
    let e = err("id: cam1\ninput: [{address: a}]\nwebrtc:\n  enabled: maybe\n");
    assert_eq!(e.position, Some((4, 12)), "{e}");
    let e = err("id: cam1\ninput: [{address: \"\"}]\n");
    assert!(e.message.contains("non-empty"), "{e}");
}

#[test]
fn yaml_syntax_error_is_located() {
    let e = err("id: cam1\ninput: [\n");
    assert!(e.position.is_some(), "{e}");
}

#[test]
fn unreadable_file_says_so() {
    let e = Plan::from_file(Path::new("/nonexistent/x.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/x.yaml: cannot read the profile"),
        "{e}"
    );
}

#[test]
fn restart_and_stale_timeout_are_read() {
    let plan = parse(&format!(
        "{MINIMAL}restart:\n  policy: on-failure\n  initial_delay: 500ms\n  max_attempts: 3\nstale_timeout: 4\n"
    ))
    .unwrap();
    assert_eq!(
        plan.restart.policy,
        crate::profile::restart::Policy::OnFailure
    );
    assert_eq!(plan.restart.initial_delay.0, Duration::from_millis(500));
    assert_eq!(plan.restart.max_attempts, 3);
    assert_eq!(plan.stale_timeout, Some(Duration::from_secs(4)));
    let defaults = parse(MINIMAL).unwrap();
    assert_eq!(
        defaults.restart.policy,
        crate::profile::restart::Policy::Never
    );
    assert_eq!(defaults.stale_timeout, Some(DEFAULT_STALE_TIMEOUT));
    let off = parse(&format!("{MINIMAL}stale_timeout: 0\n")).unwrap();
    assert_eq!(off.stale_timeout, None);
}

#[test]
fn bad_restart_values_are_located() {
    let e = err(&format!("{MINIMAL}restart:\n  policy: sometimes\n"));
    assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
    assert!(e.message.contains("unknown variant `sometimes`"), "{e}");
    let e = err(&format!("{MINIMAL}restart:\n  factor: 0.5\n"));
    assert_eq!(e.position, Some((5, 11)), "{e}");
    let e = err(&format!("{MINIMAL}stale_timeout: soon\n"));
    assert_eq!(e.position, Some((4, 16)), "{e}");
    assert!(e.message.contains("expected a duration"), "{e}");
}

#[test]
fn gop_cache_and_keyframe_interval_are_read() {
    let plan = parse(&format!(
        "{MINIMAL}webrtc:\n  gop_cache: {{max_bytes: 1000000, max_age: 5s}}\n  video: {{keyframe_interval: 4s}}\n"
    ))
    .unwrap();
    assert_eq!(
        plan.gop_cache,
        Some(CacheLimits {
            max_bytes: 1_000_000,
            max_age: Duration::from_secs(5)
        })
    );
    assert_eq!(
        plan.video.unwrap().codec_args.last().unwrap(),
        "expr:gte(t,n_forced*4)"
    );
    let off = parse(&format!(
        "{MINIMAL}webrtc: {{gop_cache: {{enabled: false}}}}\n"
    ))
    .unwrap();
    assert_eq!(off.gop_cache, None);
    let e = err(&format!(
        "{MINIMAL}webrtc:\n  video: {{copy: true, keyframe_interval: 2s}}\n"
    ));
    assert!(
        e.message
            .contains("`keyframe_interval` sets the default encoder"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}webrtc:\n  audio: {{keyframe_interval: 2s}}\n"
    ));
    assert!(e.message.contains("audio has no keyframes"), "{e}");
    let e = err(&format!(
        "{MINIMAL}webrtc:\n  gop_cache: {{max_bytes: 0}}\n"
    ));
    assert!(e.message.contains("above 0"), "{e}");
}

#[test]
fn auth_may_name_a_service_to_ask() {
    let plan = parse(&format!(
        "{MINIMAL}auth: {{url: \"http://auth.example/check\", timeout: 2s}}\n"
    ))
    .unwrap();
    assert_eq!(
        plan.auth,
        Some(Access::Service(ServiceConfig {
            url: "http://auth.example/check".into(),
            timeout: Duration::from_secs(2),
        }))
    );
    let plan = parse(&format!(
        "{MINIMAL}auth: {{url: \"http://127.0.0.1:9/x\"}}\n"
    ))
    .unwrap();
    assert!(matches!(plan.auth, Some(Access::Service(s)) if s.timeout == DEFAULT_SERVICE_TIMEOUT));
    for (bad, says) in [
        ("{url: \"ftp://x\"}", "expected an http:// or https:// URL"),
        ("{url: \"https://a b/x\"}", "not a valid URL"),
        ("{url: \"http://\"}", "no host"),
        ("{url: \"http://a\", token: b}", "exactly one of"),
        ("{url: \"http://a\", timeout: 0}", "above 0"),
        ("{url: \"http://a\", timeout: 60s}", "at most 30 s"),
        ("{token: a, timeout: 2s}", "auth: timeout: only with url"),
    ] {
        let e = err(&format!("{MINIMAL}auth: {bad}\n"));
        assert!(e.message.contains(says), "{bad}: {e}");
        // The section's own position, not the document's start.
        assert_eq!(e.position.map(|p| p.0), Some(4), "{bad}: {e}");
    }
}

#[test]
fn auth_takes_exactly_one_source() {
    let plan = parse(&format!("{MINIMAL}auth: {{token_env: CAM1_TOKEN}}\n")).unwrap();
    assert_eq!(
        plan.auth,
        Some(Access::Token(crate::auth::TokenSource::Env(
            "CAM1_TOKEN".into()
        )))
    );
    let e = err(&format!("{MINIMAL}auth: {{token: a, token_file: /b}}\n"));
    assert!(
        e.message
            .contains("exactly one of token, token_env, token_file or url"),
        "{e}"
    );
    assert!(e.position.is_some());
    let e = err(&format!("{MINIMAL}auth: {{password: a}}\n"));
    assert!(e.message.contains("unknown field `password`"), "{e}");
}

#[test]
fn hooks_are_read_with_their_defaults() {
    use super::hooks::{DEFAULT_HOOK_QUEUE, DEFAULT_HOOK_TIMEOUT, EventKind};
    let plan = parse(&format!(
        "{MINIMAL}hooks:\n  - command: [/bin/notify, -q]\n  \
         - events: [viewer_join, exit]\n    url: \"http://127.0.0.1:9/e\"\n    \
         timeout: 2s\n    concurrency: 4\n    queue: 10\n"
    ))
    .unwrap();
    let [all, some] = &plan.hooks[..] else {
        panic!("{:?}", plan.hooks)
    };
    assert_eq!(all.events, EventKind::ALL);
    assert_eq!(
        all.command.as_deref(),
        Some(&["/bin/notify".to_owned(), "-q".to_owned()][..])
    );
    assert_eq!(
        (all.timeout, all.concurrency, all.queue),
        (DEFAULT_HOOK_TIMEOUT, 1, DEFAULT_HOOK_QUEUE)
    );
    assert_eq!(some.events, [EventKind::ViewerJoin, EventKind::Exit]);
    assert_eq!(some.url.as_deref(), Some("http://127.0.0.1:9/e"));
    assert_eq!(
        (some.timeout.as_secs(), some.concurrency, some.queue),
        (2, 4, 10)
    );
    assert!(parse(MINIMAL).unwrap().hooks.is_empty());
}

#[test]
fn bad_hooks_are_located() {
    for (bad, says) in [
        ("{events: [ready]}", "expected a command, a url, or both"),
        ("{command: []}", "expected a program and its arguments"),
        (
            "{events: [started], command: [a]}",
            "unknown variant `started`",
        ),
        ("{events: [], command: [a]}", "empty list"),
        (
            "{url: \"ftp://x\"}",
            "hooks[0]: url \"ftp://x\": expected an http:// or https:// URL",
        ),
        ("{command: [a], timeout: 0}", "above 0"),
        ("{command: [a], concurrency: 0}", "expected 1 to 64"),
        ("{command: [a], queue: 0}", "expected 1 to 65536"),
        ("{command: [a], shell: true}", "unknown field `shell`"),
    ] {
        let e = err(&format!("{MINIMAL}hooks:\n  - {bad}\n"));
        assert!(e.message.contains(says), "{bad}: {e}");
        assert_eq!(e.position.map(|p| p.0), Some(5), "{bad}: {e}");
    }
}

#[test]
fn whip_pushes_are_read_with_their_retry() {
    use crate::auth::TokenSource;
    let plan = parse(&format!(
        "{MINIMAL}whip:\n  - url: \"https://sfu.example/whip/cam1\"\n    token_env: SFU_TOKEN\n  \
         - url: \"http://10.0.0.2:7080/whip/endpoint/cam\"\n    \
         retry: {{initial_delay: 0.5, max_delay: 10s, jitter: 0}}\n"
    ))
    .unwrap();
    let [a, b] = &plan.whip[..] else {
        panic!("{:?}", plan.whip)
    };
    assert_eq!(a.url, "https://sfu.example/whip/cam1");
    assert_eq!(a.token, Some(TokenSource::Env("SFU_TOKEN".into())));
    assert_eq!(a.retry.initial_delay.0, Duration::from_secs(1));
    assert_eq!(b.token, None);
    assert_eq!(b.retry.initial_delay.0, Duration::from_millis(500));
    assert_eq!(b.retry.max_delay.0, Duration::from_secs(10));
    assert_eq!(b.retry.jitter.0, 0.0);
    // Retried for as long as the stream runs.
    assert_eq!(b.retry.policy, restart::Policy::Always);
    assert_eq!(b.retry.max_attempts, u32::MAX);
    assert!(parse(MINIMAL).unwrap().whip.is_empty());
}

#[test]
fn bad_whip_pushes_are_located() {
    for (bad, says) in [
        (
            "{url: \"rtmp://x/live\"}",
            "whip[0]: url \"rtmp://x/live\": expected an http:// or https:// URL",
        ),
        (
            "{url: \"http://x\", token: a, token_env: B}",
            "at most one of token",
        ),
        ("{url: \"http://x\", token: \" \"}", "token is empty"),
        (
            "{url: \"http://x\", retry: {initial_delay: 0}}",
            "retry.initial_delay: expected above 0",
        ),
        (
            "{url: \"http://x\", retry: {max_attempts: 3}}",
            "unknown field `max_attempts`",
        ),
        ("{url: \"http://x\", bearer: a}", "unknown field `bearer`"),
        ("{token: a}", "missing field `url`"),
    ] {
        let e = err(&format!("{MINIMAL}whip:\n  - {bad}\n"));
        assert!(e.message.contains(says), "{bad}: {e}");
        assert_eq!(e.position.map(|p| p.0), Some(5), "{bad}: {e}");
    }
}

const LADDER: &str = "id: cam1\ninput:\n  - address: in.mp4\nwebrtc:\n  video:\n    ladder:\n      \
    - {height: 720, bitrate: 2500k}\n      - {height: 360, bitrate: 0.7M}\n      \
    - {height: 180, bitrate: 200000, fps: 15}\n";

#[test]
fn a_ladder_gives_each_rung_its_bitrate_ssrc_and_the_legs_encoder() {
    let plan = parse(LADDER).unwrap();
    let video = plan.video.unwrap();
    let rungs = &video.rungs;
    assert_eq!(rungs.len(), 3);
    let got: Vec<(u32, u64, Option<f64>)> = rungs
        .iter()
        .map(|r| (r.rung.height, r.rung.bitrate, r.rung.fps))
        .collect();
    assert_eq!(
        got,
        [
            (720, 2_500_000, None),
            (360, 700_000, None),
            (180, 200_000, Some(15.0))
        ]
    );
    assert_eq!(rungs[0].ssrc, video.ssrc, "the first rung is the leg's own");
    let ssrcs: std::collections::HashSet<u32> = rungs.iter().map(|r| r.ssrc).collect();
    assert_eq!(ssrcs.len(), 3, "each rung its own SSRC");
    assert!(rungs.iter().all(|r| r.scaled && r.ssrc <= i32::MAX as u32));
    let mut want = default_video_encoder(DEFAULT_KEYFRAME_INTERVAL);
    want.extend(to_strings(&[
        "-b:v", "700000", "-maxrate", "700000", "-bufsize", "350000",
    ]));
    assert_eq!(rungs[1].codec_args, want);
    assert!(
        parse(MINIMAL).unwrap().video.unwrap().rungs.is_empty(),
        "no ladder, no rungs"
    );
}

#[test]
fn a_copied_leg_with_a_ladder_copies_the_first_rung_and_keys_the_others_on_its_keyframes() {
    let yaml = LADDER.replace("  video:\n", "  video:\n    copy: true\n");
    let video = parse(&yaml).unwrap().video.unwrap();
    assert!(!video.rungs[0].scaled);
    assert_eq!(video.rungs[0].codec_args, to_strings(VIDEO_COPY));
    for r in &video.rungs[1..] {
        assert!(r.scaled);
        let at = r
            .codec_args
            .iter()
            .position(|a| a == "-force_key_frames")
            .unwrap();
        assert_eq!(r.codec_args[at + 1], "source", "{:?}", r.codec_args);
    }
}

#[test]
fn ladder_errors_say_what_is_wrong_and_where() {
    let cases: &[(&str, &str, (usize, usize))] = &[
        // A rung as tall as the one above it, at its own line.
        (
            "    ladder:\n      - {height: 360, bitrate: 700k}\n      - {height: 720, bitrate: 200k}\n",
            "height 720 is not below the rung above it (360)",
            (8, 9),
        ),
        (
            "    ladder:\n      - {height: 720, bitrate: 700k}\n      - {height: 360, bitrate: 900k}\n",
            "bitrate 900k is not below the rung above it (700k)",
            (8, 9),
        ),
        (
            "    ladder:\n      - {height: 720, bitrate: 2500k, width: 1280}\n",
            "unknown field `width`",
            (7, 39),
        ),
        (
            "    ladder:\n      - {height: 721, bitrate: 1M}\n",
            "height 721: expected an even",
            (7, 9),
        ),
        (
            "    ladder:\n      - {height: 720, bitrate: fast}\n",
            "bitrate \"fast\"",
            (7, 32),
        ),
        (
            "    ladder:\n      - {height: 720, bitrate: 1M, fps: 0}\n",
            "fps 0",
            (7, 9),
        ),
        ("    ladder: []\n", "empty ladder", (6, 13)),
        (
            &format!(
                "    ladder:\n{}",
                (0..7)
                    .map(|k| format!(
                        "      - {{height: {}, bitrate: {}k}}\n",
                        1000 - 100 * k,
                        5000 - 500 * k
                    ))
                    .collect::<String>()
            ),
            "more than 6 rungs",
            (13, 9),
        ),
        (
            "    copy: true\n    ladder:\n      - {height: 720, bitrate: 2M, fps: 25}\n",
            "with `copy: true` the first rung is the copied input",
            (6, 5),
        ),
    ];
    for (ladder, want, at) in cases {
        let yaml = format!("id: cam1\ninput:\n  - address: in.mp4\nwebrtc:\n  video:\n{ladder}");
        let e = err(&yaml);
        assert!(e.message.contains(want), "{ladder}: {e}");
        assert_eq!(e.position, Some(*at), "{ladder}: {e}");
    }
    let audio = err(
        "id: cam1\ninput:\n  - address: in.mp4\nwebrtc:\n  audio:\n    ladder: [{height: 720, bitrate: 1M}]\n",
    );
    assert!(audio.message.contains("expected it under video"), "{audio}");
}

#[test]
fn switch_at_is_read_beside_a_ladder_and_refused_without_one() {
    let yaml = LADDER.replace("    ladder:\n", "    switch_at: cache\n    ladder:\n");
    let video = parse(&yaml).unwrap().video.unwrap();
    assert_eq!(video.switch_at, ladder::SwitchAt::Cache);
    assert_eq!(
        parse(LADDER).unwrap().video.unwrap().switch_at,
        ladder::SwitchAt::Keyframe
    );
    let e = err("id: cam1\ninput:\n  - address: in.mp4\nwebrtc:\n  video:\n    switch_at: cache\n");
    assert!(e.message.contains("expected it beside `ladder`"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
    let e = err(&LADDER.replace("    ladder:\n", "    switch_at: later\n    ladder:\n"));
    assert!(e.message.contains("unknown variant `later`"), "{e}");
}
