//! The runtime each viewer's connection is built on: the default one, with
//! its spawned tasks tracked (so a viewer's hang-up can wait until nothing
//! of its connection runs) and, with `--udp-mux`, its UDP sockets replaced
//! by virtual sockets of the mux for the connection's ICE ufrag.

use super::mux::UdpMux;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    default_runtime,
};

pub(super) struct TrackedRuntime {
    inner: Arc<dyn Runtime>,
    tasks: TaskTracker,
    /// The mux and this connection's ufrag, when every viewer shares a port.
    mux: Option<(Arc<UdpMux>, String)>,
}

impl fmt::Debug for TrackedRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TrackedRuntime({:?}, {} tasks)",
            self.inner,
            self.tasks.len()
        )
    }
}

impl TrackedRuntime {
    pub(super) fn new(
        tasks: TaskTracker,
        mux: Option<(Arc<UdpMux>, String)>,
    ) -> io::Result<Arc<Self>> {
        let inner = default_runtime().ok_or_else(|| io::Error::other("no async runtime"))?;
        Ok(Arc::new(Self { inner, tasks, mux }))
    }
}

impl Runtime for TrackedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(Box::pin(self.tasks.track_future(future)))
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        match &self.mux {
            // The stack's own socket is dropped: the connection uses the mux.
            Some((mux, ufrag)) => Ok(mux.socket(ufrag)),
            None => self.inner.wrap_udp_socket(socket),
        }
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }
}
