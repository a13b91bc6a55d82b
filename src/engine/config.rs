//! How viewers' peer connections are set up: local addresses and port
//! ranges, ICE servers, NAT addresses, the UDP mux, timeouts.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How a viewer's peer connections are set up.
#[derive(Debug)]
pub struct PeerConfig {
    /// Local UDP addresses each shard binds (port 0: ephemeral, or from
    /// the range); a wildcard stands for every interface's address.
    pub ice_addrs: Vec<SocketAddr>,
    /// The longest wait for candidate gathering before answering.
    pub gather_timeout: Duration,
    /// A session whose connection is not up this long after the answer is
    /// dropped and its resources freed.
    pub setup_timeout: Duration,
    /// STUN/TURN servers for the server's agent (also advertised to viewers).
    pub ice_servers: Vec<IceServer>,
    /// Public addresses (NAT 1:1) put in the host candidates instead of the
    /// local ones.
    pub nat_ips: Vec<std::net::IpAddr>,
    /// Ports for the shards' UDP sockets (for firewalls), instead of ephemeral.
    pub port_range: Option<PortRange>,
    /// Local TCP addresses for ICE-TCP (passive) candidates, when wanted.
    pub ice_tcp_addrs: Vec<SocketAddr>,
    /// One UDP port for every viewer, instead of one per shard and address.
    pub udp_mux: Option<SocketAddr>,
    /// Engine shards (tasks that drive viewers' connections).
    pub shards: usize,
}

/// A range of UDP ports handed out in turn.
#[derive(Debug)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
    next: std::sync::atomic::AtomicU16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Self {
        Self {
            first,
            last,
            next: std::sync::atomic::AtomicU16::new(first),
        }
    }

    /// A port of the range that is free on `ip` right now, trying each once
    /// from where the last search ended.
    pub fn take(&self, ip: std::net::IpAddr) -> Option<u16> {
        let span = u32::from(self.last - self.first) + 1;
        for _ in 0..span {
            let port = self.next.fetch_add(1, Relaxed);
            let port = if port < self.first || port > self.last {
                self.next.store(self.first + 1, Relaxed);
                self.first
            } else {
                port
            };
            if std::net::UdpSocket::bind((ip, port)).is_ok() {
                return Some(port);
            }
        }
        None
    }
}

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    /// The `Link` header value that advertises this server (WHEP §4.6).
    pub fn link(&self) -> String {
        let mut v = format!("<{}>; rel=\"ice-server\"", self.url);
        if let (Some(u), Some(c)) = (&self.username, &self.credential) {
            v.push_str(&format!(
                "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
            ));
        }
        v
    }
}
