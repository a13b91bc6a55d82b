//! ICE-TCP (passive, RFC 6544) over the sans-IO cores: the listener accepts
//! streams, reads RFC 4571 frames (a 16-bit length, then the datagram), and
//! hands them to the shard of the connection that the first frame's STUN
//! USERNAME names. What the core sends back goes through a bounded queue to
//! the stream's writer.

use super::routes::Routes;
use super::shard::Input;
use super::stun_peek;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Frames queued toward one viewer's stream.
const WRITE_QUEUE: usize = 1024;

/// Accepts ICE-TCP streams on `listener` until it fails.
pub(crate) async fn accept(
    listener: TcpListener,
    routes: Arc<Routes>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let serve = serve(stream, local, from, routes.clone(), tasks.clone());
        tasks.spawn(stop.clone().run_until_cancelled_owned(serve));
    }
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<BytesMut> {
    let len = r.read_u16().await.ok()?;
    let mut buf = BytesMut::zeroed(usize::from(len));
    r.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

async fn serve(
    stream: TcpStream,
    local: SocketAddr,
    from: SocketAddr,
    routes: Arc<Routes>,
    tasks: TaskTracker,
) {
    let (mut read, mut write) = stream.into_split();
    let Some(first) = read_frame(&mut read).await else {
        tracing::debug!(%from, "ICE-TCP stream closed before its first frame");
        return;
    };
    let Some(ufrag) = stun_peek::local_ufrag(&first).map(str::to_owned) else {
        tracing::debug!(%from, "ICE-TCP stream whose first frame is no STUN check");
        return;
    };
    let Some(inbox) = routes.inbox(&ufrag) else {
        tracing::debug!(%from, ufrag, "ICE-TCP stream for no session");
        return;
    };
    tracing::debug!(%from, ufrag, "ICE-TCP stream opened");
    let (writer, mut frames) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    tasks.spawn(async move {
        while let Some(f) = frames.recv().await {
            if write.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    let opened = Input::TcpStream {
        ufrag,
        local,
        from,
        writer,
    };
    if inbox.send(opened).await.is_err() {
        return;
    }
    let mut next = Some(first);
    while let Some(data) = next {
        let d = Input::Datagram {
            local,
            from,
            tcp: true,
            data,
        };
        if inbox.send(d).await.is_err() {
            return;
        }
        next = read_frame(&mut read).await;
    }
}
