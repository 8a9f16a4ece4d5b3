//! The HTTP/1.1 accept loop and the limits that keep one client from
//! costing the others: a cap on open connections, a deadline for a
//! request's headers (which also closes idle keep-alive connections), and a
//! deadline and a size cap for its body.
//!
//! Written on hyper directly because `axum::serve` has no timeouts or
//! connection cap: there a silent socket stays open for as long as its
//! client likes, and a few hundred of them exhaust the descriptors.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::{router, AppState};

/// How much of the server one connection may hold, and for how long.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; more wait in the kernel's backlog until
    /// one closes. Keep it below the process's descriptor limit.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, counted from when the server
    /// starts waiting for them — so it also closes a connection that sits
    /// idle between requests (keep-alive) or never sends anything.
    pub header_timeout: Duration,
    /// Time for a request's whole body to arrive (408 after it).
    pub body_timeout: Duration,
    /// Largest request body (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_body_bytes: 8 << 20,
        }
    }
}

/// Serves `state` on `listener` under `limits` until `shutdown` completes,
/// then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_on(vec![listener], state, limits, shutdown).await
}

/// The same on several listeners at once (`--host 127.0.0.1,::1`): one
/// router, one connection cap for all of them.
pub async fn serve_on(
    listeners: Vec<TcpListener>,
    state: AppState,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    if listeners.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on"));
    }
    for l in &listeners {
        tracing::info!("listening on http://{}", l.local_addr()?);
    }
    let app = router(state, &limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let accept = futures::future::select_all(listeners.iter().map(|l| Box::pin(l.accept())));
        let stream = tokio::select! {
            (r, _, _) = accept => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept:
                    // back off a moment rather than spin, and keep serving.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            // `Content-Type`, not `content-type`: the same header to HTTP,
            // but some clients look names up case-sensitively.
            .title_case_headers(true)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed: {e}");
            }
            drop(permit);
        });
    }
    drop(listeners);
    graceful.shutdown().await;
    Ok(())
}

/// Reads the whole request body under the size cap and deadline, so
/// handlers see a complete body and a slow or oversized one gets a precise
/// error (408, 413) in OpenAI's shape.
pub async fn read_body(State(limits): State<HttpLimits>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return ApiError::body_too_large(limits.max_body_bytes).into_response();
    }
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, limits.max_body_bytes).collect();
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Err(_) => return ApiError::body_timeout(limits.body_timeout).into_response(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::body_too_large(limits.max_body_bytes).into_response()
        }
        Ok(Err(e)) => return ApiError::bad_json(format!("reading the request body: {e}")).into_response(),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}
