use super::*;
use crate::profile::{
    DEFAULT_AUDIO_ENCODER, DEFAULT_KEYFRAME_INTERVAL, Plan, VIDEO_COPY, default_video_encoder,
};

const PORTS: LegPorts = LegPorts {
    video: 40000,
    audio: 40001,
};

fn plan(yaml: &str) -> Plan {
    Plan::from_yaml(yaml, "t.yaml").unwrap()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

/// Splits an argv's tail into outputs: each is the options up to and
/// including the next `rtp://` URL.
fn legs_of(argv: &[String]) -> Vec<&[String]> {
    let first = argv.iter().position(|a| a == "-map").expect("no leg");
    let mut legs = Vec::new();
    let mut start = first;
    for (i, a) in argv.iter().enumerate().skip(first) {
        if a.starts_with("rtp://") {
            legs.push(&argv[start..=i]);
            start = i + 1;
        }
    }
    assert_eq!(start, argv.len(), "tokens after the last leg");
    legs
}

#[test]
fn builds_both_legs_with_default_payload_types() {
    let p = plan("id: s\ninput: [{address: in.mp4}]\n");
    let argv = build(&p, PORTS);
    let legs = legs_of(&argv);
    assert_eq!(legs.len(), 2);
    let (v, a) = (legs[0], legs[1]);
    let mut want_v = strings(&["-map", "0:v:0"]);
    want_v.extend(default_video_encoder(DEFAULT_KEYFRAME_INTERVAL));
    want_v.extend(strings(&["-f", "rtp", "-payload_type", "102", "-ssrc"]));
    want_v.push(p.video.as_ref().unwrap().ssrc.to_string());
    want_v.push("rtp://127.0.0.1:40000?pkt_size=1200&rtcpport=40000".into());
    assert_eq!(v, &want_v[..]);
    let mut want_a = strings(&["-map", "0:a:0"]);
    want_a.extend(strings(DEFAULT_AUDIO_ENCODER));
    want_a.extend(strings(&["-f", "rtp", "-payload_type", "111", "-ssrc"]));
    want_a.push(p.audio.as_ref().unwrap().ssrc.to_string());
    want_a.push("rtp://127.0.0.1:40001?pkt_size=1200&rtcpport=40001".into());
    assert_eq!(a, &want_a[..]);
}

#[test]
fn legs_split_into_separate_outputs() {
    let p = plan("id: s\ninput: [{address: in.mp4}]\n");
    let legs = rtp_legs(&p, PORTS);
    assert_eq!(legs.len(), 2);
    for (leg, port) in legs.iter().zip([40000, 40001]) {
        assert_eq!(leg.options[0], "-map", "each leg starts with its map");
        assert_eq!(leg.options.iter().filter(|o| *o == "-map").count(), 1);
        assert_eq!(leg.address, rtp_url(port), "each leg's address is its URL");
        assert!(!leg.options.iter().any(|o| o.starts_with("rtp://")));
    }
    assert!(legs[0].options.iter().any(|o| o == "-c:v"));
    assert!(
        !legs[1].options.iter().any(|o| o == "-c:v"),
        "video options leaked into audio"
    );
}

#[test]
fn order_is_globals_inputs_outputs_legs() {
    let p = plan(
        "id: s\noptions: [-y]\ninput:\n  - {address: a.mp4, options: [-re]}\n  - {address: b.wav}\n\
         output: [{address: rec.mkv, options: [-map, '0', -c, copy]}]\n",
    );
    let argv = build(&p, PORTS);
    let mut want = strings(&[
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-progress",
        "pipe:1",
        "-stats_period",
        "1",
    ]);
    want.extend(strings(&[
        "-loglevel",
        "level+info",
        "-y",
        "-re",
        "-i",
        "a.mp4",
        "-i",
        "b.wav",
        "-map",
        "0",
    ]));
    assert_eq!(&argv[..want.len()], &want[..]);
    let rest = &argv[want.len()..];
    assert_eq!(&rest[..3], &strings(&["-c", "copy", "rec.mkv"])[..]);
    assert_eq!(legs_of(&rest[3..]).len(), 2);
}

#[test]
fn payload_type_and_ssrc_overrides_reach_the_legs() {
    let p = plan(
        "id: s\ninput: [{address: a}]\nwebrtc: {video_pt: 96, audio_pt: 97, video: {ssrc: 5}, audio: {ssrc: 6}}\n",
    );
    let legs = rtp_legs(&p, PORTS);
    let after = |leg: &Io, flag: &str| {
        let i = leg.options.iter().position(|o| o == flag).unwrap();
        leg.options[i + 1].clone()
    };
    assert_eq!(
        (after(&legs[0], "-payload_type"), after(&legs[0], "-ssrc")),
        ("96".into(), "5".into())
    );
    assert_eq!(
        (after(&legs[1], "-payload_type"), after(&legs[1], "-ssrc")),
        ("97".into(), "6".into())
    );
}

#[test]
fn audio_only_and_video_only_build_one_leg() {
    let audio_only = plan("id: s\ninput: [{address: a}]\nwebrtc: {video: {enabled: false}}\n");
    let legs = rtp_legs(&audio_only, PORTS);
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].address, rtp_url(40001));
    let video_only = plan("id: s\ninput: [{address: a}]\nwebrtc: {audio: {enabled: false}}\n");
    let legs = rtp_legs(&video_only, PORTS);
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].address, rtp_url(40000));
    let none = plan("id: s\ninput: [{address: a}]\nwebrtc: {enabled: false}\n");
    assert!(rtp_legs(&none, PORTS).is_empty());
    assert!(!build(&none, PORTS).iter().any(|a| a.starts_with("rtp://")));
}

#[test]
fn copy_passes_h264_through() {
    let p = plan("id: s\ninput: [{address: rtsp://cam}]\nwebrtc: {video: {copy: true}}\n");
    let legs = rtp_legs(&p, PORTS);
    assert_eq!(
        &legs[0].options[2..2 + VIDEO_COPY.len()],
        &strings(VIDEO_COPY)[..]
    );
    assert!(!legs[0].options.iter().any(|o| o == "libx264"));
}

#[test]
fn profile_loglevel_is_not_overridden() {
    let p = plan("id: s\noptions: [-loglevel, debug]\ninput: [{address: a}]\n");
    let argv = build(&p, PORTS);
    assert_eq!(argv.iter().filter(|a| *a == "-loglevel").count(), 1);
}

#[test]
fn shell_line_quotes_what_needs_it() {
    let line = shell_line(
        "ffmpeg",
        &strings(&["-i", "a b.mp4", "expr:gte(t,n_forced*1)", "x&y"]),
    );
    assert_eq!(line, "ffmpeg -i 'a b.mp4' 'expr:gte(t,n_forced*1)' 'x&y'");
}

#[test]
fn a_ladder_decodes_once_and_sends_each_rung_to_its_own_port() {
    let p = plan(
        "id: s\ninput: [{address: in.mp4}]\nwebrtc:\n  video:\n    ladder:\n      \
         - {height: 720, bitrate: 2500k}\n      - {height: 360, bitrate: 700k}\n      \
         - {height: 180, bitrate: 200k, fps: 15}\n",
    );
    let argv = build(&p, PORTS);
    let at = argv.iter().position(|a| a == "-filter_complex").unwrap();
    assert_eq!(
        argv[at + 1],
        "[0:v:0]split=3[s0][s1][s2];[s0]scale=-2:720[r0];[s1]scale=-2:360[r1];\
         [s2]scale=-2:180,fps=15[r2]"
    );
    assert!(
        at < argv.iter().position(|a| a == "-map").unwrap(),
        "the graph before the legs"
    );
    let legs = legs_of(&argv);
    assert_eq!(legs.len(), 4, "three rungs and audio");
    let video = p.video.as_ref().unwrap();
    for (k, (port, map)) in [(40000, "[r0]"), (40002, "[r1]"), (40003, "[r2]")]
        .iter()
        .enumerate()
    {
        let leg = legs[k];
        assert_eq!(leg[..2], strings(&["-map", map])[..], "rung {k}");
        assert_eq!(
            leg.last().unwrap(),
            &format!("rtp://127.0.0.1:{port}?pkt_size=1200&rtcpport={port}")
        );
        let ssrc = leg.iter().position(|a| a == "-ssrc").unwrap();
        assert_eq!(leg[ssrc + 1], video.rungs[k].ssrc.to_string());
        let b = leg.iter().position(|a| a == "-b:v").unwrap();
        assert_eq!(leg[b + 1], video.rungs[k].rung.bitrate.to_string());
        let pt = leg.iter().position(|a| a == "-payload_type").unwrap();
        assert_eq!(leg[pt + 1], "102");
    }
    assert_eq!(legs[3][1], "0:a:0");
    assert!(
        legs[3].last().unwrap().contains(":40001?"),
        "audio stays on V+1"
    );
}

#[test]
fn a_copied_ladder_copies_its_first_rung_and_scales_only_the_rest() {
    let p = plan(
        "id: s\ninput: [{address: rtsp://cam}]\nwebrtc:\n  video:\n    copy: true\n    ladder:\n      \
         - {height: 1080, bitrate: 4M}\n      - {height: 360, bitrate: 700k}\n",
    );
    let argv = build(&p, PORTS);
    let at = argv.iter().position(|a| a == "-filter_complex").unwrap();
    assert_eq!(
        argv[at + 1],
        "[0:v:0]scale=-2:360[r1]",
        "one scaled rung, no split"
    );
    let legs = legs_of(&argv);
    let mut want = strings(&["-map", "0:v:0"]);
    want.extend(strings(VIDEO_COPY));
    assert_eq!(legs[0][..want.len()], want[..]);
    assert_eq!(legs[1][..2], strings(&["-map", "[r1]"])[..]);
    assert!(legs[1].last().unwrap().contains(":40002?"));
}

#[test]
fn without_a_ladder_there_is_no_filter_graph() {
    let p = plan("id: s\ninput: [{address: in.mp4}]\n");
    assert!(!build(&p, PORTS).contains(&"-filter_complex".to_owned()));
    assert_eq!(PORTS.rung(0), 40000);
    assert_eq!(PORTS.rung(2), 40003);
}
