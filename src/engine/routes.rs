//! Which shard a datagram read outside the shards belongs to (the UDP mux,
//! ICE-TCP streams): by the ICE ufrag of the first STUN check from an
//! address, or by the address a connection sent its own check to. Also the STUN transactions of candidate gathering, whose answers
//! arrive on a shard's socket.

use super::shard::Input;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

/// Our ICE ufrags, each with its shard's inbox.
#[derive(Default)]
pub(crate) struct Routes {
    by_ufrag: Mutex<HashMap<String, mpsc::Sender<Input>>>,
    /// Remote addresses our connections on the mux sent to, with their
    /// ufrags: the answers to our checks carry no USERNAME.
    sent_to: Mutex<HashMap<SocketAddr, String>>,
}

impl Routes {
    fn sent_to(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, String>> {
        // Inserts and removes cannot be left half done.
        self.sent_to.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection of `ufrag` on the mux sent to `remote`.
    pub fn learn(&self, remote: SocketAddr, ufrag: &str) {
        self.sent_to().insert(remote, ufrag.to_owned());
    }

    /// The connection of `ufrag` is gone: `remote` is no longer its.
    pub fn forget(&self, remote: SocketAddr, ufrag: &str) {
        let mut map = self.sent_to();
        if map.get(&remote).is_some_and(|u| u == ufrag) {
            map.remove(&remote);
        }
    }

    /// The ufrag of the connection that sent to `remote`, if any did.
    pub fn ufrag_sent_to(&self, remote: SocketAddr) -> Option<String> {
        self.sent_to().get(&remote).cloned()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Input>>> {
        // Inserts and removes cannot be left half done.
        self.by_ufrag.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, ufrag: &str, inbox: mpsc::Sender<Input>) {
        self.map().insert(ufrag.to_owned(), inbox);
    }

    pub fn unregister(&self, ufrag: &str) {
        self.map().remove(ufrag);
    }

    pub fn inbox(&self, ufrag: &str) -> Option<mpsc::Sender<Input>> {
        self.map().get(ufrag).cloned()
    }
}

/// Binding requests sent to STUN servers, waiting for their answers.
#[derive(Default)]
pub(crate) struct StunWaiters {
    waiting: Mutex<HashMap<[u8; 12], oneshot::Sender<SocketAddr>>>,
}

impl StunWaiters {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 12], oneshot::Sender<SocketAddr>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A binding request to send; its answer (the mapped address) comes on
    /// the receiver.
    pub fn request(&self) -> (Vec<u8>, [u8; 12], oneshot::Receiver<SocketAddr>) {
        use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
        let id = TransactionId::new();
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![Box::new(id), Box::new(BINDING_REQUEST)];
        // Building a request of two fixed parts cannot fail.
        let _ = m.build(&setters);
        let (tx, rx) = oneshot::channel();
        self.map().insert(id.0, tx);
        (m.raw, id.0, rx)
    }

    pub fn forget(&self, id: &[u8; 12]) {
        self.map().remove(id);
    }

    /// Takes a datagram that no connection claimed: a binding success for
    /// one of our requests is handed to its waiter.
    pub fn answer(&self, data: &[u8]) {
        use rtc::stun::message::{BINDING_SUCCESS, Getter, Message};
        use rtc::stun::xoraddr::XorMappedAddress;
        if data.len() < 20 || data[0] & 0xc0 != 0 {
            return;
        }
        let mut m = Message::new();
        m.raw = data.to_vec();
        if m.decode().is_err() || m.typ != BINDING_SUCCESS {
            return;
        }
        let Some(tx) = self.map().remove(&m.transaction_id.0) else {
            return;
        };
        let mut xor = XorMappedAddress::default();
        if xor.get_from(&m).is_ok() {
            let _ = tx.send(SocketAddr::new(xor.ip, xor.port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_success_reaches_its_waiter() {
        use rtc::stun::message::{BINDING_SUCCESS, Message, Setter, TransactionId};
        use rtc::stun::xoraddr::XorMappedAddress;
        let waiters = StunWaiters::default();
        let (_, id, mut rx) = waiters.request();
        let mapped: SocketAddr = "203.0.113.7:4242".parse().unwrap();
        let mut resp = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId(id)),
            Box::new(BINDING_SUCCESS),
            Box::new(XorMappedAddress {
                ip: mapped.ip(),
                port: mapped.port(),
            }),
        ];
        resp.build(&setters).unwrap();
        waiters.answer(&resp.raw);
        assert_eq!(rx.try_recv().unwrap(), mapped);
        waiters.answer(&resp.raw); // a second answer finds nobody
    }
}
