//! One UDP port for every viewer (`--udp-mux`): every shard sends on the
//! shared socket, and one task reads it and hands each datagram to the shard
//! of its connection. Datagrams from a known remote address go where the
//! last did; the first one from a new address is a STUN check whose
//! USERNAME starts with one of our ICE ufrags, which names the shard, or
//! the answer to a check one of our connections sent there.

use super::routes::{Routes, StunWaiters};
use super::shard::Input;
use super::stun_peek;
use bytes::BytesMut;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Remote addresses remembered before the oldest are forgotten.
const ADDRS: usize = 65_536;

/// Binds `addr` (a concrete address: it goes into the candidates).
pub fn bind(addr: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    Ok(Arc::new(UdpSocket::from_std(std)?))
}

/// Reads the mux socket and routes what arrives, until the socket fails.
pub(crate) async fn route(socket: Arc<UdpSocket>, routes: Arc<Routes>, stun: Arc<StunWaiters>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut by_addr: HashMap<SocketAddr, (String, mpsc::Sender<Input>)> = HashMap::new();
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() < 1500 {
            buf.reserve(1500 * 32);
        }
        let Ok((n, from)) = socket.recv_buf_from(&mut buf).await else {
            buf.clear();
            continue;
        };
        let data = buf.split_to(n);
        let known = by_addr
            .get(&from)
            .filter(|(_, inbox)| !inbox.is_closed())
            .map(|(_, inbox)| inbox.clone());
        let inbox = match known {
            Some(i) => Some(i),
            None => match stun_peek::local_ufrag(&data)
                .map(str::to_owned)
                .or_else(|| routes.ufrag_sent_to(from))
            {
                Some(u) => routes.inbox(&u).inspect(|inbox| {
                    if by_addr.len() >= ADDRS {
                        by_addr.clear();
                    }
                    by_addr.insert(from, (u, inbox.clone()));
                }),
                None => None,
            },
        };
        match inbox {
            Some(inbox) => {
                let _ = inbox.try_send(Input::Datagram {
                    local,
                    from,
                    tcp: false,
                    data,
                });
            }
            None => stun.answer(&data),
        }
    }
}
