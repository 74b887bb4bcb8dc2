//! The SPN's HTTP server loop, instead of `axum::serve`: bounded against
//! clients that open connections and never finish them.
//!
//! - A connection with no request in service (headers not yet complete, or
//!   idle between keep-alive requests) is closed after [`Limits::idle`].
//! - Each source address may hold [`Limits::per_ip`] connections; more are
//!   closed as they are accepted.
//! - The whole server holds at most [`Limits::total`] (by default half the
//!   process's open-file limit): at the cap a new connection takes the place
//!   of the connection idle longest, so half-open connections cannot lock
//!   honest clients out, whatever addresses they come from.
//!
//! Request bodies have their own deadlines in the handlers (see `api`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Connection bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections one source address may hold.
    pub per_ip: usize,
    /// Connections the server holds in all.
    pub total: usize,
    /// How long a connection may sit without a request in service.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_ip: 32, total: (open_file_limit() / 2).clamp(64, 8192), idle: Duration::from_secs(15) }
    }
}

/// This process's soft limit on open files (Linux), or a cautious guess.
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1024)
}

struct Conn {
    ip: IpAddr,
    /// Requests in service (from their headers until their answer is sent).
    busy: usize,
    last_active: Instant,
    close: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    all: HashMap<u64, Conn>,
    by_ip: HashMap<IpAddr, usize>,
}

type Shared = Arc<Mutex<Conns>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Conns> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Conns {
    /// Close the connection that has been idle longest; false if none is idle.
    fn evict_idlest(&mut self) -> bool {
        let idlest = self.all.iter().filter(|(_, c)| c.busy == 0).min_by_key(|(_, c)| c.last_active).map(|(id, _)| *id);
        match idlest {
            Some(id) => {
                self.remove(id);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(mut c) = self.all.remove(&id) {
            if let Some(close) = c.close.take() {
                let _ = close.send(());
            }
            if let Some(n) = self.by_ip.get_mut(&c.ip) {
                *n -= 1;
                if *n == 0 {
                    self.by_ip.remove(&c.ip);
                }
            }
        }
    }

    fn touch(&mut self, id: u64, delta: isize) {
        if let Some(c) = self.all.get_mut(&id) {
            c.busy = c.busy.saturating_add_signed(delta);
            c.last_active = Instant::now();
        }
    }
}

/// Marks its connection busy while a response body is still being sent.
struct Guard {
    conns: Shared,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        lock(&self.conns).touch(self.id, -1);
    }
}

/// A response body that keeps its connection counted as busy until sent.
struct Guarded {
    inner: Body,
    _guard: Guard,
}

impl HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serve `app` on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let conns: Shared = Arc::default();
    let watchdog = {
        let conns = conns.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut c = lock(&conns);
                let stale: Vec<u64> = c
                    .all
                    .iter()
                    .filter(|(_, x)| x.busy == 0 && x.last_active.elapsed() > limits.idle)
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    c.remove(id);
                }
            }
        })
    };
    let _stop_watchdog = AbortOnDrop(watchdog);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors: make room, then go on.
                tracing::warn!("accepting an HTTP connection: {e}");
                lock(&conns).evict_idlest();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let ip = addr.ip();
        let (id, close_rx) = {
            let mut c = lock(&conns);
            if c.by_ip.get(&ip).copied().unwrap_or(0) >= limits.per_ip {
                tracing::debug!(%ip, "connection refused: too many from this address");
                continue;
            }
            if c.all.len() >= limits.total && !c.evict_idlest() {
                tracing::debug!(%ip, "connection refused: every connection is busy");
                continue;
            }
            let id = c.next;
            c.next += 1;
            let (tx, rx) = oneshot::channel();
            c.all.insert(id, Conn { ip, busy: 0, last_active: Instant::now(), close: Some(tx) });
            *c.by_ip.entry(ip).or_insert(0) += 1;
            (id, rx)
        };
        let _ = stream.set_nodelay(true);
        let (app, conns) = (app.clone(), conns.clone());
        tokio::spawn(async move {
            let svc_conns = conns.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                let conns = svc_conns.clone();
                lock(&conns).touch(id, 1);
                let guard = Guard { conns, id };
                async move {
                    let res = tower::ServiceExt::oneshot(app, req.map(Body::new)).await;
                    res.map(|r| r.map(|b| Body::new(Guarded { inner: b, _guard: guard })))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.idle)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!("HTTP connection: {e}") },
                _ = close_rx => {}
            }
            lock(&conns).remove(id);
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(ip: u8, busy: usize, ago: u64) -> Conn {
        Conn {
            ip: IpAddr::from([127, 0, 0, ip]),
            busy,
            last_active: Instant::now() - Duration::from_secs(ago),
            close: None,
        }
    }

    #[test]
    fn the_idlest_connection_goes_first_and_busy_ones_never() {
        let mut c = Conns::default();
        for (id, x) in [(1, conn(2, 0, 5)), (2, conn(3, 0, 50)), (3, conn(4, 1, 500))] {
            *c.by_ip.entry(x.ip).or_insert(0) += 1;
            c.all.insert(id, x);
        }
        assert!(c.evict_idlest());
        assert!(!c.all.contains_key(&2), "the one idle 50 s goes first");
        assert!(c.evict_idlest());
        assert!(!c.evict_idlest(), "a busy connection is never evicted");
        assert_eq!(c.all.len(), 1);
        assert_eq!(c.by_ip.len(), 1);
    }
}
