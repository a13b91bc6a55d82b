//! The datagrams a shard turn produced, sent with `sendmmsg`: one system
//! call for up to [`CHUNK`] datagrams, whoever they go to. The buffers of
//! the call are kept between turns, so a flush allocates nothing.

use bytes::BytesMut;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call.
const CHUNK: usize = 64;

/// Queued datagrams, each with the socket (an index into the shard's) and
/// the destination.
#[derive(Default)]
pub(crate) struct Batch {
    out: Vec<(usize, SocketAddr, BytesMut)>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into `out` and
// `addrs` only while `flush` runs, and the batch is used by one task at a
// time.
unsafe impl Send for Batch {}

impl Batch {
    pub fn push(&mut self, socket: usize, to: SocketAddr, data: BytesMut) {
        self.out.push((socket, to, data));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Sends everything queued; returns how many datagrams the kernel
    /// refused (each logged at debug).
    pub async fn flush(&mut self, sockets: &[&UdpSocket]) -> usize {
        let mut refused = 0;
        for (index, socket) in sockets.iter().enumerate() {
            let mut start = 0;
            let mine: Vec<usize> = (0..self.out.len())
                .filter(|&i| self.out[i].0 == index)
                .collect();
            while start < mine.len() {
                let end = (start + CHUNK).min(mine.len());
                match self.send_chunk(socket, &mine[start..end]).await {
                    Ok(n) => start += n.max(1),
                    Err(e) => {
                        // This datagram cannot go (e.g. an unreachable
                        // address): skip it, not the rest.
                        tracing::debug!(error = %e, to = %self.out[mine[start]].1, "send refused");
                        refused += 1;
                        start += 1;
                    }
                }
            }
        }
        self.out.clear();
        refused
    }

    /// One `sendmmsg` of the datagrams at `which`; waits while the socket
    /// buffer is full.
    async fn send_chunk(&mut self, socket: &UdpSocket, which: &[usize]) -> io::Result<usize> {
        self.addrs.clear();
        self.iovs.clear();
        self.hdrs.clear();
        for &i in which {
            let (_, to, data) = &self.out[i];
            self.addrs.push(sockaddr(to));
            self.iovs.push(libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
        }
        for (k, &i) in which.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = &mut self.addrs[k] as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = match self.out[i].1 {
                SocketAddr::V4(_) => std::mem::size_of::<libc::sockaddr_in>() as u32,
                SocketAddr::V6(_) => std::mem::size_of::<libc::sockaddr_in6>() as u32,
            };
            h.msg_hdr.msg_iov = &mut self.iovs[k];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        let fd = socket.as_raw_fd();
        loop {
            let hdrs = &mut self.hdrs;
            let r = socket.try_io(Interest::WRITABLE, || {
                // SAFETY: every header points at a live address and iovec
                // of this batch, for the length given.
                let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
                other => return other,
            }
        }
    }
}

fn sockaddr(a: &SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: an all-zero sockaddr_storage is valid; the family-specific
    // struct written into it fits.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is smaller than sockaddr_storage.
            unsafe { std::ptr::write(&mut s as *mut _ as *mut libc::sockaddr_in, sin) };
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 is smaller than sockaddr_storage.
            unsafe { std::ptr::write(&mut s as *mut _ as *mut libc::sockaddr_in6, sin6) };
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_reaches_each_destination_in_order() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut batch = Batch::default();
        for i in 0..100u8 {
            let to = if i % 2 == 0 { &a } else { &b };
            batch.push(0, to.local_addr().unwrap(), BytesMut::from(&[i; 3][..]));
        }
        assert_eq!(batch.flush(&[&sender]).await, 0);
        assert_eq!(batch.len(), 0);
        let mut buf = [0u8; 16];
        for (sock, first) in [(&a, 0u8), (&b, 1)] {
            for k in 0..50u8 {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                assert_eq!(from, sender.local_addr().unwrap());
                assert_eq!(&buf[..n], &[first + 2 * k; 3]);
            }
        }
    }
}
