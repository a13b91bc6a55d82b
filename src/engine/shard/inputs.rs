//! A shard's commands: joins, hang-ups (BYE and close_notify, then the
//! connection is forgotten), trickled candidates, reports, new feeds, and
//! the datagrams and ICE-TCP streams handed over from outside.

use super::{Feed, Input, Shard};
use crate::engine::conn::Conn;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

impl Shard {
    pub(super) fn input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Join(conn, done) => {
                self.join(*conn, now);
                let _ = done.send(());
            }
            Input::HangUp(id, done) => {
                if let Some(slot) = self.by_id.get(&id).copied() {
                    self.close(slot, now);
                }
                let _ = done.send(());
            }
            Input::Candidate(id, c, done) => {
                let r = match self.conn(id) {
                    Some(conn) => conn.add_remote_candidate(c),
                    None => Err("the session has ended".to_owned()),
                };
                if let Some(slot) = self.by_id.get(&id).copied() {
                    self.after_core(slot, now);
                }
                let _ = done.send(r);
            }
            Input::Choose(id, choice, done) => {
                let r = match self.conn(id) {
                    Some(conn) => conn.choose(choice, now),
                    None => Err("the session has ended".to_owned()),
                };
                if let Some(slot) = self.by_id.get(&id).copied() {
                    self.after_core(slot, now);
                }
                let _ = done.send(r);
            }
            Input::Report(id, done) => {
                if let Some(conn) = self.conn(id) {
                    let _ = done.send(conn.link_report(now));
                }
            }
            Input::Feed(key, rx) => {
                if !self.feeds.iter().any(|f| f.key == key) && !rx.is_closed() {
                    self.feeds.push(Feed {
                        key,
                        rx,
                        viewers: Vec::new(),
                        rotate: 0,
                        stashed: None,
                        closed: false,
                    });
                    self.fed_keys().insert(key);
                    self.attach_all(key);
                }
            }
            Input::Datagram {
                local,
                from,
                tcp,
                data,
            } => self.datagram(local, from, tcp, data, now),
            Input::TcpStream {
                ufrag,
                local,
                from,
                writer,
            } => {
                if let Some(&slot) = self.by_ufrag.get(&ufrag) {
                    self.route(slot, local, from);
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.tcp_writers.insert(from, writer);
                    }
                }
            }
        }
    }

    fn conn(&mut self, id: u64) -> Option<&mut Conn> {
        let slot = *self.by_id.get(&id)?;
        self.conns[slot].as_mut()
    }

    fn join(&mut self, mut conn: Conn, now: Instant) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.by_id.insert(conn.id, slot);
        self.by_ufrag.insert(conn.ufrag.clone(), slot);
        conn.take_feeds_changed();
        for (track, t) in conn.tracks.iter_mut().enumerate() {
            t.feeds = t.wanted_feeds();
            for key in &t.feeds {
                if let Some(f) = self.feeds.iter_mut().find(|f| f.key == *key) {
                    f.viewers.push((slot, track));
                }
            }
        }
        self.conns[slot] = Some(conn);
        self.load.fetch_add(1, Relaxed);
        self.after_core(slot, now);
    }

    /// A new feed: every viewer of its source here watches it.
    fn attach_all(&mut self, key: usize) {
        let Some(f) = self.feeds.iter_mut().find(|f| f.key == key) else {
            return;
        };
        for (slot, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            for (i, t) in c.tracks.iter().enumerate() {
                if t.feeds.contains(&key) && !f.viewers.contains(&(slot, i)) {
                    f.viewers.push((slot, i));
                }
            }
        }
    }

    /// Says BYE and close_notify, sends them, forgets the connection.
    fn close(&mut self, slot: usize, now: Instant) {
        let Some(mut conn) = self.conns[slot].take() else {
            return;
        };
        conn.say_goodbye(now);
        conn.drain_writes(&self.sockets, &mut self.batch);
        self.by_id.remove(&conn.id);
        self.by_ufrag.remove(&conn.ufrag);
        self.routes.unregister(&conn.ufrag);
        for a in &conn.addrs {
            self.by_addr.remove(a);
            self.routes.forget(a.1, &conn.ufrag);
        }
        for f in &mut self.feeds {
            f.viewers.retain(|(s, _)| *s != slot);
        }
        self.pacing.retain(|s| *s != slot);
        self.free.push(slot);
        self.load.fetch_sub(1, Relaxed);
    }
}
