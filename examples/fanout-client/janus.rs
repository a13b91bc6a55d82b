//! Janus's HTTP API, as far as the load client uses it: one request, the
//! event long-poll that brings the streaming plugin's offer, and the address
//! Janus gathered on.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::Duration;

/// One Janus API request; fails on a Janus `error` reply.
pub async fn janus_call(
    http: &reqwest::Client,
    url: &str,
    mut body: Value,
) -> anyhow::Result<Value> {
    body["transaction"] = json!(format!("{:016x}", rand::random::<u64>()));
    let text = http
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?
        .text()
        .await?;
    let reply: Value = serde_json::from_str(&text).with_context(|| format!("{url}: {text}"))?;
    if reply["janus"] == "error" {
        bail!("{url}: {}", reply["error"]);
    }
    Ok(reply)
}

/// Long-polls the session's events until one carries an SDP offer.
pub async fn janus_offer(http: &reqwest::Client, session_url: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        let text = http
            .get(format!("{session_url}?maxev=1"))
            .send()
            .await?
            .text()
            .await?;
        let events: Value = serde_json::from_str(&text)?;
        let events = events.as_array().cloned().unwrap_or_else(|| vec![events]);
        for e in events {
            if let Some(sdp) = e["jsep"]["sdp"].as_str() {
                return Ok(sdp.to_owned());
            }
            if e["plugindata"]["data"]["error"].is_string() {
                bail!("janus: {}", e["plugindata"]["data"]["error"]);
            }
        }
    }
    bail!("no offer from Janus within 15 s")
}

/// The address of the first IPv4 UDP host candidate in an SDP.
pub fn host_ipv4(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| {
        let f: Vec<&str> = l.strip_prefix("a=candidate:")?.split_whitespace().collect();
        let ipv4 = f.get(4)?.parse::<std::net::Ipv4Addr>().ok()?;
        (f.get(2)?.eq_ignore_ascii_case("udp") && f.get(7) == Some(&"host"))
            .then(|| ipv4.to_string())
    })
}
