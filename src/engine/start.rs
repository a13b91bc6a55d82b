//! The media engine: the shards that drive every viewer's connection, their
//! sockets, the UDP mux and ICE-TCP listeners, and the choice of shard for a
//! new viewer. Also the candidate gathering a viewer's answer needs (host
//! addresses, server-reflexive ones from STUN servers).

use super::answer::Local;
use super::config::PeerConfig;
use super::identity::Identity;
use super::routes::{Routes, StunWaiters};
use super::shard::{Input, Shard, ShardSocket};
use super::{mux, tcp};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Commands and handed-over datagrams queued for one shard.
const INBOX: usize = 4096;

/// A shard as the rest of the process sees it.
pub(crate) struct ShardHandle {
    pub inbox: mpsc::Sender<Input>,
    /// Its UDP sockets (for gathering), by local address.
    pub sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Viewers it drives.
    pub load: Arc<AtomicUsize>,
    /// The sources it has a feed of: a joining viewer subscribes one only
    /// when its source is not among them.
    pub fed: Arc<Mutex<HashSet<usize>>>,
}

/// The running engine.
pub struct Engine {
    pub config: PeerConfig,
    pub(crate) shards: Vec<ShardHandle>,
    pub(crate) routes: Arc<Routes>,
    pub(crate) stun: Arc<StunWaiters>,
    /// ICE-TCP listeners' addresses.
    pub(crate) tcp: Vec<SocketAddr>,
    /// The DTLS certificate every connection presents.
    identity: Identity,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({} shards)", self.shards.len())
    }
}

impl Engine {
    /// Binds every socket and starts the shards (and the mux and ICE-TCP
    /// tasks) in `tasks`, until `stop`.
    pub fn start(
        config: PeerConfig,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let routes = Arc::new(Routes::default());
        let stun = Arc::new(StunWaiters::default());
        let mux = match config.udp_mux {
            Some(addr) => {
                let socket = mux::bind(addr)
                    .with_context(|| format!("cannot bind the UDP mux on {addr}"))?;
                tasks.spawn(until(
                    stop.clone(),
                    mux::route(socket.clone(), routes.clone(), stun.clone()),
                ));
                Some((socket.local_addr()?, socket))
            }
            None => None,
        };
        let mut tcp_addrs = Vec::new();
        for addr in &config.ice_tcp_addrs {
            let std = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot bind the ICE-TCP address {addr}"))?;
            std.set_nonblocking(true)?;
            tcp_addrs.push(std.local_addr()?);
            let listener = tokio::net::TcpListener::from_std(std)?;
            tasks.spawn(until(
                stop.clone(),
                tcp::accept(listener, routes.clone(), tasks.clone(), stop.clone()),
            ));
        }
        let ips = local_ips(&config.ice_addrs);
        let mut shards = Vec::new();
        for index in 0..config.shards.max(1) {
            let (tx, rx) = mpsc::channel(INBOX);
            let mut sockets = Vec::new();
            match &mux {
                Some((local, socket)) => sockets.push(ShardSocket {
                    socket: socket.clone(),
                    local: *local,
                    read_here: false,
                }),
                None => {
                    for (ip, port) in &ips {
                        let socket = bind_udp(&config, *ip, *port)?;
                        sockets.push(ShardSocket {
                            local: socket.local_addr()?,
                            socket: Arc::new(socket),
                            read_here: true,
                        });
                    }
                }
            }
            let handle_sockets = sockets
                .iter()
                .map(|s| (s.local, s.socket.clone()))
                .collect();
            let load = Arc::new(AtomicUsize::new(0));
            let fed = Arc::new(Mutex::new(HashSet::new()));
            let shard = Shard::new(
                index,
                sockets,
                rx,
                routes.clone(),
                stun.clone(),
                load.clone(),
                fed.clone(),
                stop.clone(),
            );
            tasks.spawn(shard.run());
            shards.push(ShardHandle {
                inbox: tx,
                sockets: handle_sockets,
                load,
                fed,
            });
        }
        Ok(Self {
            config,
            shards,
            routes,
            stun,
            tcp: tcp_addrs,
            identity: Identity::new().context("making the DTLS certificate")?,
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// The DTLS certificate for a new connection (one for all of them).
    pub(crate) fn certificate(&self) -> rtc::peer_connection::certificate::RTCCertificate {
        self.identity.certificate(std::time::SystemTime::now())
    }

    /// The index of the shard with the fewest viewers.
    pub(crate) fn pick(&self) -> usize {
        let mut best = 0;
        for (i, s) in self.shards.iter().enumerate().skip(1) {
            if s.load.load(Relaxed) < self.shards[best].load.load(Relaxed) {
                best = i;
            }
        }
        best
    }

    /// Our candidates on `shard`: its sockets, what the STUN servers see of
    /// them (within the gather timeout), the ICE-TCP listeners.
    pub(crate) async fn gather(&self, shard: &ShardHandle) -> Vec<Local> {
        let mut locals: Vec<Local> = shard.sockets.iter().map(|(a, _)| Local::Udp(*a)).collect();
        let urls: Vec<&str> = self
            .config
            .ice_servers
            .iter()
            .map(|s| s.url.as_str())
            .collect();
        for found in self.reflexive_of(shard, &urls).await {
            if !locals.contains(&found) {
                locals.push(found);
            }
        }
        locals.extend(self.tcp.iter().map(|a| Local::Tcp(*a)));
        locals
    }

    /// What the `stun:` servers among `urls` see of `shard`'s sockets
    /// (within the gather timeout); other URLs are left out.
    pub(crate) async fn reflexive_of(&self, shard: &ShardHandle, urls: &[&str]) -> Vec<Local> {
        let servers = stun_servers(urls).await;
        let mut asks = Vec::new();
        for (base, socket) in &shard.sockets {
            for server in &servers {
                if server.is_ipv4() == base.is_ipv4() {
                    asks.push(self.reflexive(*base, socket.clone(), *server));
                }
            }
        }
        let mut found: Vec<Local> = Vec::new();
        for f in futures::future::join_all(asks).await.into_iter().flatten() {
            if !found.contains(&f) {
                found.push(f);
            }
        }
        found
    }

    /// What `server` sees of `socket`: asked again every 500 ms until it
    /// answers or the gather timeout passes.
    async fn reflexive(
        &self,
        base: SocketAddr,
        socket: Arc<UdpSocket>,
        server: SocketAddr,
    ) -> Option<Local> {
        let (request, id, mut answer) = self.stun.request();
        let deadline = tokio::time::Instant::now() + self.config.gather_timeout;
        let found = loop {
            let _ = socket.send_to(&request, server).await;
            let wait = tokio::time::sleep(Duration::from_millis(500));
            tokio::select! {
                a = &mut answer => break a.ok(),
                _ = tokio::time::sleep_until(deadline) => break None,
                _ = wait => {}
            }
        };
        self.stun.forget(&id);
        match found {
            Some(addr) => Some(Local::Reflexive { addr, base }),
            None => {
                tracing::warn!(
                    %server,
                    timeout_ms = self.config.gather_timeout.as_millis() as u64,
                    "ICE gathering incomplete: no answer from a STUN server; answering with what was gathered"
                );
                None
            }
        }
    }
}

/// The longest a STUN server's name may take to resolve.
const LOOKUP_LIMIT: Duration = Duration::from_secs(2);

/// The addresses of the `stun:` servers among `urls`.
async fn stun_servers(urls: &[&str]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for url in urls {
        let Some(host) = url.strip_prefix("stun:") else {
            continue;
        };
        let host = host.split('?').next().unwrap_or(host);
        let host = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !host.ends_with(']')
        {
            host.to_owned()
        } else {
            format!("{host}:3478")
        };
        match tokio::time::timeout(LOOKUP_LIMIT, tokio::net::lookup_host(&host)).await {
            Ok(Ok(addrs)) => out.extend(addrs),
            Ok(Err(e)) => tracing::warn!(server = %url, error = %e, "cannot resolve a STUN server"),
            Err(_) => tracing::warn!(server = %url, "a STUN server's name did not resolve in time"),
        }
    }
    out
}

/// Runs `f` until `stop`.
async fn until(stop: CancellationToken, f: impl Future<Output = ()>) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = f => {}
    }
}

/// A UDP socket on `ip`: port `port`, or one from the range, or ephemeral.
fn bind_udp(cfg: &PeerConfig, ip: IpAddr, port: u16) -> anyhow::Result<UdpSocket> {
    let port = match (&cfg.port_range, port) {
        (Some(range), 0) => range
            .take(ip)
            .ok_or_else(|| anyhow::anyhow!("no free UDP port in {}-{}", range.first, range.last))?,
        _ => port,
    };
    let std = std::net::UdpSocket::bind((ip, port))
        .map_err(|e| anyhow::anyhow!("cannot bind a viewers' UDP socket on {ip}:{port}: {e}"))?;
    std.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(std)?)
}

/// The concrete addresses for `--ice-addr`: a wildcard stands for every
/// up interface's address of its family (not loopback or link-local: give
/// those explicitly).
fn local_ips(addrs: &[SocketAddr]) -> Vec<(IpAddr, u16)> {
    let mut out: Vec<(IpAddr, u16)> = Vec::new();
    let mut push = |ip: IpAddr, port: u16| {
        if !out.iter().any(|(i, _)| *i == ip) {
            out.push((ip, port));
        }
    };
    for a in addrs {
        if a.ip().is_unspecified() {
            for ip in interface_ips() {
                if ip.is_ipv4() == a.is_ipv4() && !ip.is_loopback() && !is_link_local(&ip) {
                    push(ip, a.port());
                }
            }
        } else {
            push(a.ip(), a.port());
        }
    }
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The addresses of the interfaces that are up.
fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and then free.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            if up && !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}
