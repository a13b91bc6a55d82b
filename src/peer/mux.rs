//! One UDP port for every viewer (`--udp-mux`): the webrtc crate binds a
//! socket per connection, so each connection's runtime (`runtime.rs`) hands
//! it a virtual socket on the shared one instead. Datagrams from a known
//! remote address go to its connection; the first one from a new address is
//! a STUN check whose USERNAME starts with our ICE ufrag, which names it.

use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

/// Datagrams queued for one connection before the mux drops them.
const QUEUE: usize = 1024;

type Inbox = mpsc::Sender<(Bytes, SocketAddr)>;

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Inbox>,
    by_addr: HashMap<SocketAddr, String>,
}

/// The shared socket and who gets what arrives on it.
pub struct UdpMux {
    socket: tokio::net::UdpSocket,
    local: SocketAddr,
    routes: Mutex<Routes>,
}

impl fmt::Debug for UdpMux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UdpMux({})", self.local)
    }
}

impl UdpMux {
    /// Binds `addr` (a concrete address: it goes into the candidates); the
    /// future routes what arrives, for the caller to run until it stops.
    pub fn bind(addr: SocketAddr) -> io::Result<(Arc<Self>, impl Future<Output = ()> + Send)> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let local = std.local_addr()?;
        let mux = Arc::new(Self {
            socket: tokio::net::UdpSocket::from_std(std)?,
            local,
            routes: Mutex::default(),
        });
        let route = Arc::clone(&mux).route();
        Ok((mux, route))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Map inserts and removes cannot be left half done.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn route(self: Arc<Self>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, from)) = self.socket.recv_from(&mut buf).await else {
                continue;
            };
            let data = &buf[..n];
            let inbox = {
                let mut routes = self.routes();
                let known = routes.by_addr.get(&from).cloned();
                let ufrag = known.or_else(|| stun_local_ufrag(data).map(str::to_owned));
                match ufrag {
                    Some(u) => match routes.by_ufrag.get(&u).cloned() {
                        Some(inbox) => {
                            routes.by_addr.insert(from, u);
                            Some(inbox)
                        }
                        None => None,
                    },
                    None => None,
                }
            };
            if let Some(inbox) = inbox {
                let _ = inbox.try_send((Bytes::copy_from_slice(data), from));
            }
        }
    }

    fn register(&self, ufrag: &str) -> mpsc::Receiver<(Bytes, SocketAddr)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.routes().by_ufrag.insert(ufrag.to_owned(), tx);
        rx
    }

    fn unregister(&self, ufrag: &str) {
        let mut routes = self.routes();
        routes.by_ufrag.remove(ufrag);
        routes.by_addr.retain(|_, u| u != ufrag);
    }
}

/// The local ufrag of a STUN message's USERNAME (`local:remote`), if the
/// datagram is a STUN message that has one.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let mut attrs = data.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + alen)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        attrs = attrs.get(4 + alen.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    None
}

/// One connection's view of the shared socket.
pub struct MuxSocket {
    mux: Arc<UdpMux>,
    ufrag: String,
    inbox: Mutex<mpsc::Receiver<(Bytes, SocketAddr)>>,
}

impl fmt::Debug for MuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MuxSocket({}, {})", self.mux.local, self.ufrag)
    }
}

impl Drop for MuxSocket {
    fn drop(&mut self) {
        self.mux.unregister(&self.ufrag);
    }
}

impl AsyncUdpSocket for MuxSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.mux.local)
    }

    fn poll_send(&self, cx: &mut Context<'_>, t: &Transmit<'_>) -> Poll<io::Result<usize>> {
        self.mux.socket.poll_send_to(cx, t.contents, t.destination)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        match inbox.poll_recv(cx) {
            Poll::Ready(Some((data, from))) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                m.addr = from;
                m.len = n;
                m.stride = n.max(1);
                m.ecn = None;
                m.dst_ip = Some(self.mux.local.ip());
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::other("the UDP mux is gone"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl UdpMux {
    /// A virtual socket on the mux for the connection with ICE ufrag
    /// `ufrag`: what the connection's runtime hands the stack instead of the
    /// socket it bound.
    pub(super) fn socket(self: &Arc<Self>, ufrag: &str) -> Arc<dyn AsyncUdpSocket> {
        let inbox = Mutex::new(self.register(ufrag));
        Arc::new(MuxSocket {
            mux: Arc::clone(self),
            ufrag: ufrag.to_owned(),
            inbox,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_local_ufrag_of_a_stun_check() {
        let mut m = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        m.extend([7u8; 12]); // transaction id
        m.extend([0x00, 0x06, 0x00, 0x07]); // USERNAME, 7 bytes: "abc:def" + 1 byte of padding
        m.extend(b"abc:def\0");
        assert_eq!(stun_local_ufrag(&m), Some("abc"));
        assert_eq!(stun_local_ufrag(&m[..25]), None, "truncated");
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None, "RTP is not STUN");
    }
}
