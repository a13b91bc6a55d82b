//! The datagrams a shard turn produced, sent with `sendmmsg`: one system
//! call for up to [`CHUNK`] messages, whoever they go to. Consecutive
//! datagrams of one size to one destination (a viewer's share of a frame)
//! go as one message with UDP GSO (`UDP_SEGMENT`): the kernel routes them
//! once and cuts them into datagrams. The buffers of the call are kept
//! between turns, so a flush allocates nothing. A sampled datagram's relay
//! latency is recorded when the kernel takes it.

use super::shard::ShardSocket;
use crate::latency::Histogram;
use bytes::BytesMut;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Messages per `sendmmsg` call.
const CHUNK: usize = 64;
/// Datagrams per GSO message (the kernel's limit), and its bytes.
const GSO_SEGMENTS: usize = 64;
const GSO_BYTES: usize = 60_000;
/// `setsockopt`/cmsg level and type of UDP GSO (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;

/// Queued datagrams, each with the socket (an index into the shard's) and
/// the destination.
#[derive(Default)]
pub(crate) struct Batch {
    out: Vec<(usize, SocketAddr, BytesMut)>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// One control message (the GSO segment size) per message.
    cmsgs: Vec<[u64; 4]>,
    /// Datagrams in each message of the call being made.
    counts: Vec<usize>,
    /// The kernel refused GSO once: plain datagrams from then on.
    no_gso: bool,
    /// The queued datagrams of the socket being flushed.
    mine: Vec<usize>,
    /// Sampled datagrams (index into `out`): when their packet reached its
    /// source, and the histogram of its stream.
    samples: Vec<(usize, Instant, Arc<Histogram>)>,
}

/// A datagram's packet, sampled for the relay latency.
pub(crate) type Sample = (Instant, Arc<Histogram>);

// SAFETY: the raw pointers in `iovs` and `hdrs` point into `out` and
// `addrs` only while `flush` runs, and the batch is used by one task at a
// time.
unsafe impl Send for Batch {}

impl Batch {
    pub fn push(&mut self, socket: usize, to: SocketAddr, data: BytesMut, sample: Option<Sample>) {
        if let Some((since, histogram)) = sample {
            self.samples.push((self.out.len(), since, histogram));
        }
        self.out.push((socket, to, data));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Sends everything queued; returns how many datagrams the kernel
    /// refused (each logged at debug).
    pub async fn flush(&mut self, sockets: &[ShardSocket]) -> usize {
        let mut refused = 0;
        let mut mine = std::mem::take(&mut self.mine);
        for (index, socket) in sockets.iter().enumerate() {
            let socket = &*socket.socket;
            mine.clear();
            mine.extend((0..self.out.len()).filter(|&i| self.out[i].0 == index));
            let mut start = 0;
            while start < mine.len() {
                match self.send_chunk(socket, &mine[start..]).await {
                    Ok(n) => {
                        self.record(&mine[start..start + n]);
                        start += n;
                    }
                    Err(e) if !self.no_gso && gso_refused(&e) => {
                        tracing::debug!(error = %e, "UDP GSO refused: sending datagrams one by one");
                        self.no_gso = true;
                    }
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
        self.samples.clear();
        self.mine = mine;
        refused
    }

    /// The datagrams at `sent` (ascending) have gone: records the latency
    /// of the sampled among them.
    fn record(&self, sent: &[usize]) {
        let (Some(&first), Some(&last)) = (sent.first(), sent.last()) else {
            return;
        };
        let mut now = None;
        for (i, since, histogram) in &self.samples {
            if (first..=last).contains(i) && sent.binary_search(i).is_ok() {
                let now = *now.get_or_insert_with(Instant::now);
                histogram.record(now.saturating_duration_since(*since));
            }
        }
    }

    /// One `sendmmsg` of the datagrams at `which`, from the first, grouped
    /// for GSO; waits while the socket buffer is full. Returns how many
    /// datagrams went.
    async fn send_chunk(&mut self, socket: &UdpSocket, which: &[usize]) -> io::Result<usize> {
        self.addrs.clear();
        self.iovs.clear();
        self.hdrs.clear();
        self.cmsgs.clear();
        self.counts.clear();
        let mut k = 0;
        while k < which.len() && self.counts.len() < CHUNK {
            let (_, to, first) = &self.out[which[k]];
            let size = first.len();
            let mut n = 1;
            let mut bytes = size;
            while !self.no_gso && k + n < which.len() && n < GSO_SEGMENTS {
                let (_, to2, next) = &self.out[which[k + n]];
                if to2 != to || next.len() > size || bytes + next.len() > GSO_BYTES {
                    break;
                }
                n += 1;
                bytes += next.len();
                if next.len() < size {
                    break; // only the last segment may be shorter
                }
            }
            for &i in &which[k..k + n] {
                let data = &self.out[i].2;
                self.iovs.push(libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                });
            }
            self.addrs.push(sockaddr(to));
            self.cmsgs.push(segment_cmsg(size as u16));
            self.counts.push(n);
            k += n;
        }
        let mut iov = 0;
        for m in 0..self.counts.len() {
            let n = self.counts[m];
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = &mut self.addrs[m] as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = match self.addrs[m].ss_family as i32 {
                libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>() as u32,
                _ => std::mem::size_of::<libc::sockaddr_in6>() as u32,
            };
            h.msg_hdr.msg_iov = &mut self.iovs[iov];
            h.msg_hdr.msg_iovlen = n;
            if n > 1 {
                h.msg_hdr.msg_control = self.cmsgs[m].as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE is a pure size computation.
                h.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            }
            iov += n;
            self.hdrs.push(h);
        }
        let fd = socket.as_raw_fd();
        let sent = loop {
            let hdrs = &mut self.hdrs;
            let r = socket.try_io(Interest::WRITABLE, || {
                // SAFETY: every header points at a live address, iovecs and
                // control message of this batch, for the lengths given.
                let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
                other => break other?,
            }
        };
        Ok(self.counts[..sent].iter().sum())
    }
}

/// A control message that sets the GSO segment size.
fn segment_cmsg(size: u16) -> [u64; 4] {
    let mut buf = [0u64; 4];
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_control = buf.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: the buffer holds CMSG_SPACE(2) bytes (32 >= 24), aligned for
    // cmsghdr; the header and data written stay inside it.
    unsafe {
        h.msg_controllen = libc::CMSG_SPACE(2) as usize;
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, size);
    }
    buf
}

/// Errors with which a kernel or device says no to GSO.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
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

    /// Two receivers (reads time out rather than hang) and a sender.
    async fn sockets() -> (std::net::UdpSocket, std::net::UdpSocket, [ShardSocket; 1]) {
        let bind = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            s
        };
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sender.local_addr().unwrap();
        let sender = ShardSocket {
            socket: std::sync::Arc::new(sender),
            local,
            read_here: false,
        };
        (bind(), bind(), [sender])
    }

    #[tokio::test]
    async fn a_batch_reaches_each_destination_in_order() {
        let (a, b, sender) = sockets().await;
        let mut batch = Batch::default();
        for i in 0..100u8 {
            let to = if i % 2 == 0 { &a } else { &b };
            batch.push(
                0,
                to.local_addr().unwrap(),
                BytesMut::from(&[i; 3][..]),
                None,
            );
        }
        assert_eq!(batch.flush(&sender).await, 0);
        assert_eq!(batch.len(), 0);
        let mut buf = [0u8; 16];
        for (sock, first) in [(&a, 0u8), (&b, 1)] {
            for k in 0..50u8 {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                assert_eq!(from, sender[0].local);
                assert_eq!(&buf[..n], &[first + 2 * k; 3]);
            }
        }
    }

    /// A sampled datagram's latency runs to its send: the time it waited
    /// in the batch counts.
    #[tokio::test]
    async fn a_sampled_datagram_is_timed_when_it_is_sent() {
        let (a, _b, sender) = sockets().await;
        let histogram = Arc::new(Histogram::default());
        let mut batch = Batch::default();
        let to = a.local_addr().unwrap();
        // Arrived at its source 3 ms before it is pushed.
        let since = Instant::now() - std::time::Duration::from_millis(3);
        batch.push(0, to, BytesMut::from(&[1u8; 4][..]), None);
        batch.push(
            0,
            to,
            BytesMut::from(&[2u8; 4][..]),
            Some((since, histogram.clone())),
        );
        assert_eq!(histogram.summary().samples, 0, "not sent yet");
        assert_eq!(batch.flush(&sender).await, 0);
        let s = histogram.summary();
        assert_eq!(s.samples, 1);
        assert!(s.p50_ms.unwrap() >= 3.0, "{s:?}");
        // The next flush does not count it again.
        batch.push(0, to, BytesMut::from(&[3u8; 4][..]), None);
        batch.flush(&sender).await;
        assert_eq!(histogram.summary().samples, 1);
    }

    /// Runs of one size to one destination go as GSO messages, and still
    /// arrive as the datagrams they were, in order, the shorter last one
    /// included.
    #[tokio::test]
    async fn runs_to_one_destination_arrive_as_separate_datagrams() {
        let (a, b, sender) = sockets().await;
        let mut batch = Batch::default();
        let mut want_a = Vec::new();
        // Few enough that the receiver's buffer holds them all.
        for i in 0..60u16 {
            let len = if i % 10 == 9 { 300 } else { 1200 };
            let d = vec![(i % 251) as u8; len];
            batch.push(0, a.local_addr().unwrap(), BytesMut::from(&d[..]), None);
            want_a.push(d);
            if i % 10 == 9 {
                batch.push(
                    0,
                    b.local_addr().unwrap(),
                    BytesMut::from(&[7u8; 5][..]),
                    None,
                );
            }
        }
        assert_eq!(batch.flush(&sender).await, 0);
        let mut buf = [0u8; 2048];
        for want in &want_a {
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..]);
        }
        for _ in 0..6 {
            assert_eq!(b.recv(&mut buf).unwrap(), 5);
        }
    }
}
