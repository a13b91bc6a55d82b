//! What arrives on a shard's sockets (or is handed to it): routed to its
//! connection by address, a new address by the ufrag of its STUN check,
//! and the rest offered to the STUN gathering.

use super::{MTU, READS_PER_TURN, Shard};
use crate::engine::stun_peek;
use bytes::BytesMut;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

impl Shard {
    /// Reads what the shard's own sockets have, a bounded number each.
    pub(super) fn read(&mut self, now: Instant) {
        for s in 0..self.sockets.len() {
            if !self.sockets[s].read_here {
                continue;
            }
            for _ in 0..READS_PER_TURN {
                if self.recv_buf.capacity() < MTU {
                    self.recv_buf.reserve(MTU * 32);
                }
                let socket = Arc::clone(&self.sockets[s].socket);
                match socket.try_recv_buf_from(&mut self.recv_buf) {
                    Ok((n, from)) => {
                        let data = self.recv_buf.split_to(n);
                        let local = self.sockets[s].local;
                        self.datagram(local, from, false, data, now);
                    }
                    Err(_) => break,
                }
            }
        }
    }

    pub(super) fn datagram(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        tcp: bool,
        data: BytesMut,
        now: Instant,
    ) {
        let slot = match self.by_addr.get(&(local, from)) {
            Some(&s) => Some(s),
            None => {
                let slot =
                    stun_peek::local_ufrag(&data).and_then(|u| self.by_ufrag.get(u).copied());
                if let Some(s) = slot {
                    self.route(s, local, from);
                }
                slot
            }
        };
        let Some(slot) = slot else {
            // A STUN server's answer to our gathering, or nobody's.
            self.stun.answer(&data);
            return;
        };
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.probe.is_some() && conn.probe == crate::engine::probe::answered(&data) {
            // The answer to our own check (the core never sent it).
            conn.probe_answered(now);
            self.after_core(slot, now);
            return;
        }
        // A viewer that nominates with its first check (Chromium, aiortc)
        // gets no answer from the core while the core's own check of that
        // pair is still out: the core sends a triggered check instead, and
        // the viewer retries only 50-500 ms later. So the check is kept and
        // handed over again when the pair's answer to ours has come; the
        // core then selects the pair and answers the viewer's transaction.
        let nominating = !conn.connected && stun_peek::is_nominating_check(&data);
        let answers_held = conn
            .held_nomination
            .as_ref()
            .is_some_and(|h| h.transport.peer_addr == from && h.transport.local_addr == local)
            && stun_peek::is_binding_success(&data);
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                ecn: None,
                transport_protocol: if tcp {
                    TransportProtocol::TCP
                } else {
                    TransportProtocol::UDP
                },
            },
            message: data,
        };
        if nominating {
            conn.held_nomination = Some(TaggedBytesMut {
                now,
                transport: msg.transport,
                message: msg.message.clone(),
            });
        }
        conn.core.handle_read(msg);
        if answers_held && let Some(mut check) = conn.held_nomination.take() {
            check.now = now;
            conn.core.handle_read(check);
        }
        self.after_core(slot, now);
    }
}
