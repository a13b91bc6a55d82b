//! The H.264 payload parser on real FFmpeg RTP output (the default encoder
//! options): every keyframe is found, with its SPS and PPS, at the default
//! interval.

use bytes::Bytes;
use ffwhep::h264::payload_nals;
use ffwhep::rtp::{Datagram, classify};
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

#[test]
fn finds_sps_pps_and_idr_in_ffmpeg_rtp() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let plan = ffwhep::profile::Plan::builtin().unwrap();
    let video = plan.video.unwrap();
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "4.2",
        "-map",
        "0:v:0",
    ]);
    cmd.args(&video.codec_args);
    cmd.args(["-f", "rtp", "-payload_type", "102"]);
    cmd.arg(format!(
        "rtp://127.0.0.1:{port}?pkt_size=1200&rtcpport={port}"
    ));
    let mut ff = cmd.spawn().expect("ffmpeg not found");
    let mut keyframes = Vec::new();
    let (mut sps, mut pps) = (0, 0);
    let mut buf = [0u8; 2048];
    let mut packets = 0;
    while let Ok(n) = sock.recv(&mut buf) {
        let Datagram::Rtp(p) = classify(Bytes::copy_from_slice(&buf[..n])) else {
            continue;
        };
        packets += 1;
        let nals = payload_nals(&p.payload());
        sps += usize::from(nals.sps);
        pps += usize::from(nals.pps);
        // x264 may cut a frame into several slices: count frames.
        if nals.idr_start && keyframes.last() != Some(&p.timestamp) {
            keyframes.push(p.timestamp);
        }
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    }
    let _ = ff.wait();
    // 4.2 s at the default keyframe interval of 2 s: IDRs at 0, 2 and 4 s
    // (90 kHz clock).
    assert_eq!(keyframes.len(), 3, "{keyframes:?} in {packets} packets");
    for w in keyframes.windows(2) {
        assert_eq!(w[1].wrapping_sub(w[0]), 180_000, "{keyframes:?}");
    }
    assert!(
        sps >= 3 && pps >= 3,
        "SPS {sps}, PPS {pps}: not in-band before each IDR"
    );
}
