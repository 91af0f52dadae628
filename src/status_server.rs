//! The daemon's HTTP endpoints (`/metrics`, `/healthz`, `/readyz`), served
//! by hyper.
//!
//! A scrape endpoint must stay answerable whatever its clients do, so every
//! connection is bounded: the request head must arrive within
//! [`HEADER_READ_TIMEOUT`] and the whole exchange end within
//! [`CONNECTION_TIMEOUT`] (a slowloris client is cut off, never held for
//! hours); at most [`MAX_CONNECTIONS`] are served at once (the rest wait in
//! the kernel's backlog instead of taking file descriptors); and a failing
//! `accept` (out of file descriptors, say) backs off from 5 ms to 1 s, as Go's
//! net/http does, instead of spinning on the error. Connections are not kept
//! alive: a scrape every 15 s or more gains nothing from it, and one request
//! per connection makes the deadline the whole story.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The request line and headers must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted, whatever state
/// it is in.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How long shutdown waits for connections being served.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the endpoints answer from: the Prometheus text, and readiness.
pub trait Status: Send + Sync + 'static {
    fn metrics(&self) -> String;
    /// `Err(why)` when the daemon is not ready.
    fn ready(&self) -> Result<(), String>;
}

/// Serves `status` on `listener` until `stop` turns true, then waits up to
/// [`SHUTDOWN_GRACE`] for the connections being served.
pub async fn serve(
    listener: TcpListener,
    status: Arc<dyn Status>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = AcceptBackoff::default();
    loop {
        // Take a slot before accepting: over the limit, clients wait in the
        // backlog and no descriptor is spent on them.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot accept a connection on the metrics port");
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        let status = status.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| {
                        let status = status.clone();
                        async move { Ok::<_, Infallible>(answer(&*status, &req)) }
                    }),
                );
            // Dropping the connection at the deadline closes the socket.
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
    // Stop accepting, then give the connections being served a moment.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(MAX_CONNECTIONS as u32)).await;
}

/// The answer to one request. HEAD gets GET's status and headers; hyper
/// leaves the body out.
fn answer(status: &dyn Status, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |code: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n".into());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, status.metrics());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match status.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

/// Exponential back-off between failing `accept` calls: 5 ms doubling to 1 s.
#[derive(Default)]
struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let wait = match self.current {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.current = Some(wait);
        wait
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<u128> = (0..10).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(5));
    }
}
