//! What makes a viewer's start fast, checked on the wire: ffwhep is the
//! DTLS server, a viewer that nominates with its very first check is
//! answered without waiting for its retransmit (with or without our own
//! check of its address first), and a viewer that vanishes without DELETE
//! is hung up within 5 s; /status shows how each viewer's start went. The ICE client here is this test's own: raw STUN
//! on a UDP socket, so that nothing retries behind the test's back.

mod common;

use common::Ffwhep;
use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::Username;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const UFRAG: &str = "tEsT";
const PWD: &str = "the-test-ice-password-0123";

/// A recvonly H.264 + Opus offer with our ICE credentials, and `candidate`
/// (an `a=candidate:` line) if given.
fn offer(candidate: Option<SocketAddr>) -> String {
    let fingerprint = (0..32)
        .map(|i| format!("{:02X}", i * 7 % 256))
        .collect::<Vec<_>>()
        .join(":");
    let cand = candidate
        .map(|a| {
            format!(
                "a=candidate:1 1 udp 2130706431 {} {} typ host\r\n",
                a.ip(),
                a.port()
            )
        })
        .unwrap_or_default();
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=ice-ufrag:{UFRAG}\r\na=ice-pwd:{PWD}\r\na=fingerprint:sha-256 {fingerprint}\r\n\
         a=setup:actpass\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
         a=rtpmap:102 H264/90000\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
         a=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n{cand}\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\n"
    )
}

/// What the answer says of the server's ICE: ufrag, password, its first
/// UDP host candidate.
struct Answer {
    ufrag: String,
    pwd: String,
    candidate: SocketAddr,
    sdp: String,
}

async fn post(ff: &Ffwhep, offer: &str) -> Answer {
    let r = reqwest::Client::new()
        .post(&ff.url)
        .header("content-type", "application/sdp")
        .body(offer.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "log:\n{}", ff.log());
    let sdp = r.text().await.unwrap();
    let attr = |k: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in the answer:\n{sdp}"))
            .trim()
            .to_owned()
    };
    let cand = attr("a=candidate:");
    let f: Vec<&str> = cand.split(' ').collect();
    assert_eq!(f[2].to_ascii_lowercase(), "udp", "{cand}");
    Answer {
        ufrag: attr("a=ice-ufrag:"),
        pwd: attr("a=ice-pwd:"),
        candidate: format!("{}:{}", f[4], f[5]).parse().unwrap(),
        sdp,
    }
}

/// Our nominating check (aggressive nomination, as Chromium and aiortc
/// send first): its transaction id and bytes.
fn nominating_check(answer: &Answer) -> ([u8; 12], Vec<u8>) {
    let provider = rtc::crypto::default_provider().unwrap();
    let id = TransactionId::new();
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(id),
        Box::new(Username::new(
            ATTR_USERNAME,
            format!("{}:{UFRAG}", answer.ufrag),
        )),
        Box::new(UseCandidateAttr),
        Box::new(AttrControlling(42)),
        Box::new(PriorityAttr(1_862_270_975)),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            answer.pwd.clone(),
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).unwrap();
    (id.0, m.raw)
}

/// What came on our socket: the server's check (with its transaction), or
/// a success for one of ours.
enum Heard {
    Check([u8; 12]),
    Success([u8; 12]),
}

fn hear(sock: &UdpSocket, until: Instant) -> Option<(Heard, SocketAddr)> {
    let mut buf = [0u8; 1500];
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return None;
        };
        let mut m = Message::new();
        m.raw = buf[..n].to_vec();
        if m.decode().is_err() {
            continue; // not STUN: e.g. nothing we asked for
        }
        if m.typ == BINDING_REQUEST {
            return Some((Heard::Check(m.transaction_id.0), from));
        }
        if m.typ == BINDING_SUCCESS {
            return Some((Heard::Success(m.transaction_id.0), from));
        }
    }
}

/// Answers the server's check `id` (signed with our password, as ICE
/// wants the answers to the server's checks).
fn answer_check(sock: &UdpSocket, id: [u8; 12], to: SocketAddr) {
    let provider = rtc::crypto::default_provider().unwrap();
    let me = sock.local_addr().unwrap();
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_SUCCESS),
        Box::new(TransactionId(id)),
        Box::new(XorMappedAddress {
            ip: me.ip(),
            port: me.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            PWD.to_owned(),
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).unwrap();
    sock.send_to(&m.raw, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffwhep_answers_as_the_dtls_server() {
    let ff = Ffwhep::start(&[]);
    let answer = post(&ff, &offer(None)).await;
    // The viewer's ClientHello then goes the moment its own ICE is up;
    // as the client, ffwhep's could reach a viewer not listening yet.
    assert!(answer.sdp.contains("a=setup:passive"), "{}", answer.sdp);
}

/// Chromium's offer goes before its gathering: ffwhep learns the viewer's
/// address from its first check, which also nominates. That check gets its
/// answer without being sent twice: ffwhep's own check of the address is
/// answered first, then the held nomination is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_check_that_nominates_is_answered_without_a_retry() {
    let ff = Ffwhep::start(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let answer = post(&ff, &offer(None)).await;
    let (ours, check) = nominating_check(&answer);
    sock.send_to(&check, answer.candidate).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match hear(&sock, until) {
            Some((Heard::Check(id), from)) => answer_check(&sock, id, from),
            Some((Heard::Success(id), _)) if id == ours => break,
            Some(_) => {}
            None => panic!(
                "our one nominating check was never answered; log:\n{}",
                ff.log()
            ),
        }
    }
}

/// An offer with a candidate: ffwhep checks it at once, and the answer to
/// that check (which names no ufrag: it is routed by the address ffwhep
/// sent to) makes the pair valid. The viewer's nominating check is then
/// answered even though the viewer answers none of ffwhep's later checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_to_our_own_check_finds_its_connection() {
    let ff = Ffwhep::start(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let answer = post(&ff, &offer(Some(sock.local_addr().unwrap()))).await;
    let until = Instant::now() + Duration::from_secs(30);
    let (first, from) = match hear(&sock, until) {
        Some((Heard::Check(id), from)) => (id, from),
        _ => panic!("ffwhep never checked our candidate; log:\n{}", ff.log()),
    };
    answer_check(&sock, first, from);
    let (ours, check) = nominating_check(&answer);
    sock.send_to(&check, answer.candidate).unwrap();
    loop {
        match hear(&sock, until) {
            Some((Heard::Success(id), _)) if id == ours => break,
            Some(_) => {} // later checks of ffwhep's go unanswered
            None => panic!(
                "the nominating check was not answered: the answer to ffwhep's \
                 own check was lost; log:\n{}",
                ff.log()
            ),
        }
    }
}

/// A viewer that vanishes without DELETE (its process killed: no DTLS
/// close, no BYE) is hung up through ICE consent freshness within 5 s, not
/// the ~30 s of the stack's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_is_hung_up_within_5_s() {
    use std::io::{BufRead, BufReader};
    let ff = Ffwhep::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc_viewer.py");
    let mut viewer = std::process::Command::new("python3")
        .args([script, &ff.url, "--frames", "30", "--seconds", "60"])
        .args(["--wait-hangup", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 not found");
    let mut lines = BufReader::new(viewer.stdout.take().unwrap()).lines();
    let ready = lines
        .next()
        .expect("the aiortc viewer printed nothing")
        .unwrap();
    assert!(
        ready.contains("\"ready\": true"),
        "{ready}; log:\n{}",
        ff.log()
    );
    let status = common::StatusReader::new(&ff);
    let viewers = |s: &serde_json::Value| s["streams"][0]["viewers"].as_array().map(Vec::len);
    let s = status.get().await;
    assert_eq!(viewers(&s), Some(1));
    // Its start, as /status tells it: ICE, then DTLS, then media.
    let start = &s["streams"][0]["viewers"][0]["start"];
    let ms = |k: &str| {
        start[k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k} in {start}"))
    };
    assert!(
        ms("ice_ms") <= ms("dtls_ms") && ms("dtls_ms") <= ms("media_ms"),
        "{start}"
    );
    viewer.kill().unwrap();
    let killed = Instant::now();
    let _ = viewer.wait();
    status
        .wait("the vanished viewer to be hung up", |s| {
            viewers(s) == Some(0)
        })
        .await;
    let after = killed.elapsed();
    eprintln!("hung up {after:?} after the viewer vanished");
    assert!(
        after < Duration::from_secs(5),
        "hung up {after:?} after the viewer vanished; log:\n{}",
        ff.log()
    );
    assert!(
        ff.log().contains("connection ended"),
        "not hung up by ICE consent; log:\n{}",
        ff.log()
    );
}
