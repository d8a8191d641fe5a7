//! The HTTP listener: serves the routes over HTTP/1.1 with the limits poem's own server cannot set — a deadline for
//! a request's headers (a client sending one byte a second is dropped), an idle timeout between requests, a cap on
//! connections per client address and overall — and a graceful stop that lets requests in flight finish.
//! `routes.rs` composes every door's routes into the one endpoint it serves.

pub mod routes;

use std::collections::HashMap;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use poem::{Endpoint, EndpointExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's headers must be complete this long after its first byte (hyper's `header_read_timeout`).
    pub header_read: Duration,
    /// A kept-alive connection with no request for this long is closed.
    pub idle: Duration,
    /// Connections open at once from one client address; more are closed at accept.
    pub per_client: usize,
    /// Connections open at once in all.
    pub total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_read: Duration::from_secs(10), idle: Duration::from_secs(75), per_client: 128, total: 4096 }
    }
}

/// Connections open, per client address.
#[derive(Default)]
struct Open {
    by_client: HashMap<IpAddr, usize>,
    total: usize,
}

/// One open connection's place in `Open`, given back when it closes.
struct Slot {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open connections poisoned");
        open.total -= 1;
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

fn take_slot(open: &Arc<Mutex<Open>>, client: IpAddr, limits: &Limits) -> Option<Slot> {
    let mut o = open.lock().expect("open connections poisoned");
    let mine = o.by_client.get(&client).copied().unwrap_or(0);
    if mine >= limits.per_client || o.total >= limits.total {
        return None;
    }
    o.total += 1;
    *o.by_client.entry(client).or_insert(0) += 1;
    Some(Slot { open: open.clone(), client })
}

/// Serves `ep` on `listener` until `shutdown` resolves; then stops accepting and gives requests in flight up to
/// `grace` to finish.
pub async fn serve<E>(listener: TcpListener, ep: E, limits: Limits, shutdown: impl std::future::Future<Output = ()>, grace: Duration) -> std::io::Result<()>
where
    E: Endpoint + 'static,
{
    let ep = Arc::new(ep.map_to_response());
    let local: poem::Addr = listener.local_addr()?.into();
    let open = Arc::new(Mutex::new(Open::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait a moment rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Some(slot) = take_slot(&open, remote.ip(), &limits) else {
            tracing::debug!(client = %remote.ip(), "connection refused: too many open from this client or in all");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ep = ep.clone();
        let local = local.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            serve_one(stream, remote, local, ep, limits, &mut stop).await;
        });
    }
    let _ = stop_tx.send(true);
    drop(listener);
    if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(left = connections.len(), "requests still running after the grace period; closing them");
        connections.abort_all();
    }
    Ok(())
}

async fn serve_one<E>(stream: tokio::net::TcpStream, remote: SocketAddr, local: poem::Addr, ep: Arc<E>, limits: Limits, stop: &mut tokio::sync::watch::Receiver<bool>)
where
    E: Endpoint<Output = poem::Response> + 'static,
{
    let remote_addr: poem::Addr = remote.into();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let ep = ep.clone();
        let (local, remote) = (local.clone(), remote_addr.clone());
        async move {
            crate::memory::note_activity();
            let req = poem::Request::from((req, poem::web::LocalAddr(local), poem::web::RemoteAddr(remote), poem::http::uri::Scheme::HTTP));
            let resp: poem::Response = ep.get_response(req).await;
            Ok::<_, std::convert::Infallible>(poem::http::Response::from(resp))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(limits.header_read))
        .keep_alive(true)
        .serve_connection(TokioIo::new(IdleGuard::new(stream, limits.idle)), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Closes a connection that neither reads nor writes for `idle` (between requests; a response being streamed,
/// such as the event stream, writes and so stays open).
struct IdleGuard {
    inner: tokio::net::TcpStream,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleGuard {
    fn new(inner: tokio::net::TcpStream, idle: Duration) -> Self {
        IdleGuard { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(tokio::time::Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for IdleGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection closed"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
