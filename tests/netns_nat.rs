//! A viewer in its own network namespace reaches ffwhep only through the
//! address ffwhep advertises with --nat-ip: a one-to-one NAT made with
//! nftables (DNAT) in front of the server's address. Needs root (CI runs as
//! root; scripts/setup installs iproute2 and nftables).

mod common;

use common::Ffwhep;
use std::process::Command;

use common::netns::{Netns, root};

#[test]
fn a_viewer_behind_the_advertised_nat_address_plays() {
    let net = Netns::new("nat");
    // HTTP on server_ip; media on ice_ip, which the client has no route to:
    // only the NAT's public address leads there.
    let (server_ip, ice_ip, client_ip, public_ip) =
        ("10.201.0.1", "10.202.0.1", "10.201.0.2", "198.18.201.1");
    net.link(server_ip, client_ip);
    root(&[
        "ip",
        "addr",
        "add",
        &format!("{ice_ip}/32"),
        "dev",
        &net.veth,
    ]);
    // The public address is reachable only through the NAT, via the server side.
    net.run(&["ip", "route", "add", "198.18.201.0/24", "via", server_ip]);
    root(&["nft", "add", "table", "ip", &net.table]);
    root(&[
        "nft",
        "add",
        "chain",
        "ip",
        &net.table,
        "pre",
        "{ type nat hook prerouting priority -100; }",
    ]);
    root(&[
        "nft", "add", "rule", "ip", &net.table, "pre", "ip", "daddr", public_ip, "dnat", "to",
        ice_ip,
    ]);

    let listen = format!("{server_ip}:0");
    let ice = format!("{ice_ip}:0");
    let view = |url: &str, watch: &[&str]| -> serde_json::Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc_viewer.py");
        let out = Command::new("ip")
            .args(["netns", "exec", &net.ns, "python3", script, url])
            .args(watch)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };

    let natted = Ffwhep::start_raw(&[
        "--listen",
        &listen,
        "--ice-addr",
        &ice,
        "--nat-ip",
        public_ip,
    ]);
    let stats = view(&natted.url, &["--frames", "31", "--seconds", "60"]);
    assert_eq!(stats["status"], 201, "{stats}");
    assert!(
        stats["video_frames"].as_u64().unwrap() > 30,
        "no picture through the NAT: {stats}; log:\n{}",
        natted.log()
    );
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(640), Some(360))
    );
    drop(natted);

    // Without --nat-ip the answer names the unreachable address: no picture.
    let plain = Ffwhep::start_raw(&["--listen", &listen, "--ice-addr", &ice]);
    // Waiting for something not to happen: aiortc reports no ICE failure
    // within a minute, so the window is short. A busy machine can only make
    // this pass more easily, never fail it; the positive case above is what
    // shows the path works.
    let stats = view(&plain.url, &["--seconds", "5"]);
    assert_eq!(
        stats["video_frames"], 0,
        "the viewer reached the server without the NAT: {stats}"
    );
}
