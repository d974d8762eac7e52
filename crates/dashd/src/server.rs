//! The network edge: serving a router on a listener with bounds on what one client may
//! hold. Headers must arrive within a deadline (hyper's header-read timeout, which also
//! ends a keep-alive connection waiting for its next request), a body within another, a
//! connection moving no bytes either way is closed, and past the connection limit new
//! clients wait in the kernel's backlog instead of taking file descriptors. Every answer
//! the edge gives itself (408, 413, 414, 431) has the API's JSON error shape.
//!
//! The public listener and the admin socket are served separately, each with its own
//! [`EdgeLimits`], so a flood on the public port never takes the admin socket's slots;
//! [`connection_limit`] keeps file descriptors in reserve for the admin socket, the
//! database and outgoing HTTP.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use dash_core::api::{ErrorBody, ErrorDetail, codes};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What one listener allows its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Connections served at once; past it new clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time to send a request's line and headers, counted from the connection's start or
    /// from the end of the previous response (so it also bounds keep-alive idling).
    /// `None`: no bound (the admin socket, whose peers are local and authenticated).
    pub header_timeout: Option<Duration>,
    /// Time to send a request's whole body, counted once the headers are in.
    pub body_timeout: Duration,
    /// A connection moving no bytes either way for this long is closed (a client that
    /// stops reading its response, a handler that never answers). `None`: no bound, for
    /// the admin socket's long-lived streams.
    pub idle_timeout: Option<Duration>,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Longest request target (path and query), in bytes (414 beyond).
    pub max_uri_bytes: usize,
    /// Largest total of header names and values, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most headers in one request; hyper answers 431 itself beyond.
    pub max_headers: usize,
}

/// hyper's read buffer: a request head larger than this is refused by hyper itself with
/// an empty 431, before any middleware sees it. It is kept well above
/// [`EdgeLimits::max_header_bytes`] so the JSON answer is the one clients normally get.
const HYPER_BUFFER_BYTES: usize = 64 * 1024;
/// hyper refuses a buffer smaller than this (it panics).
const HYPER_MIN_BUFFER_BYTES: usize = 8 * 1024;

/// File descriptors kept free besides the admin socket's connections: the database pool
/// and files, outgoing provider and flow HTTP, logs.
pub const FD_RESERVE: usize = 256;

impl EdgeLimits {
    /// Limits for the public listener.
    pub fn public() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Some(Duration::from_secs(10)),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(60)),
            max_body_bytes: 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
        }
    }

    /// Limits for the admin socket: its own connections (each an operator's `dashctl`,
    /// a live stream, or a local integration), room for a flow import (a 1 MiB document,
    /// JSON-escaped), no idle bound (live streams stay open). A client past the limit
    /// waits in the kernel's queue until a connection closes, so the limit is generous.
    pub fn admin() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Some(Duration::from_secs(10)),
            body_timeout: Duration::from_secs(60),
            idle_timeout: None,
            max_body_bytes: 4 * dash_core::api::MAX_FLOW_DOCUMENT,
            ..Self::public()
        }
    }

    /// The public listener's limits from the `[server]` configuration (the defaults of
    /// [`EdgeLimits::public`] for what it does not set).
    pub fn from_server_config(server: &dash_core::config::ServerConfig) -> Self {
        Self {
            max_connections: server.max_connections as usize,
            header_timeout: Some(Duration::from_millis(server.header_timeout_ms)),
            body_timeout: Duration::from_millis(server.body_timeout_ms),
            idle_timeout: Some(Duration::from_millis(server.idle_timeout_ms)),
            max_body_bytes: usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX),
            ..Self::public()
        }
    }
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self::public()
    }
}

/// Raises the soft open-files limit to the hard one (at most 65,536), as servers do:
/// the default soft limit (often 1,024) is a compatibility value, not a policy. Done
/// once; a failure leaves the limit as it was.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| {
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let wanted = hard.min(65_536);
            if soft < wanted
                && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, wanted, hard)
            {
                tracing::warn!(error = %err, soft, hard, "cannot raise the open-files limit");
            }
        }
    });
}

/// The connection limit to use: `configured`, lowered so that `reserve` descriptors of
/// the process's soft `RLIMIT_NOFILE` stay free (at least 1 connection is allowed).
pub fn connection_limit(configured: usize, reserve: usize) -> usize {
    raise_open_files_limit();
    use nix::sys::resource::{Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _hard)) => {
            let available = usize::try_from(soft)
                .unwrap_or(usize::MAX)
                .saturating_sub(reserve);
            let limit = configured.min(available).max(1);
            if limit < configured {
                tracing::warn!(
                    configured,
                    limit,
                    nofile_soft = soft,
                    reserve,
                    "the open-files limit lowers the connection limit; raise LimitNOFILE"
                );
            }
            limit
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read RLIMIT_NOFILE; using the configured connection limit");
            configured
        }
    }
}

/// A listener the edge can serve: it accepts a stream and says who is on the other end
/// (handlers read it as `ConnectInfo<Self::Peer>`).
pub trait EdgeListener: Send + 'static {
    /// The accepted stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// What a handler learns about the peer.
    type Peer: Clone + Send + Sync + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Peer)>> + Send;
}

impl EdgeListener for TcpListener {
    type Io = tokio::net::TcpStream;
    type Peer = SocketAddr;

    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        // Small JSON answers: do not hold them back waiting for more to send.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        Ok((stream, addr))
    }
}

/// A Unix socket listener whose peers are described by `peer`, called once per
/// connection as it is accepted (the admin socket reads the peer's credentials).
#[derive(Debug)]
pub struct UnixEdge<P> {
    pub listener: UnixListener,
    pub peer: fn(&UnixStream) -> P,
}

impl<P: Clone + Send + Sync + 'static> EdgeListener for UnixEdge<P> {
    type Io = UnixStream;
    type Peer = P;

    async fn accept(&mut self) -> io::Result<(UnixStream, P)> {
        let (stream, _) = self.listener.accept().await?;
        let peer = (self.peer)(&stream);
        Ok((stream, peer))
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled; then
/// stops accepting (the listening socket is closed at once) and returns when every open
/// connection has finished its in-flight request. The caller bounds that wait: dropping
/// the returned future closes the remaining connections.
pub async fn serve<L: EdgeListener>(
    mut listener: L,
    router: Router,
    limits: EdgeLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let router = edge_layers(router, &limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // Take a slot before accepting: past the limit clients wait in the backlog and
        // hold no descriptor of ours.
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((io, peer)) => {
                let router = router.clone();
                let limits = limits.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    serve_connection(io, peer, router, &limits, shutdown).await;
                    drop(permit);
                });
            }
            Err(err) if is_per_connection(&err) => {
                tracing::debug!(error = %err, "a connection failed while being accepted");
            }
            Err(err) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::error!(error = %err, "cannot accept connections");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Accept errors that concern one client only.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection<Io, P>(
    io: Io,
    peer: P,
    router: Router,
    limits: &EdgeLimits,
    shutdown: CancellationToken,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Clone + Send + Sync + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        io,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer.clone()));
        let router = router.clone();
        async move {
            let response: Result<Response, Infallible> =
                router.oneshot(request.map(Body::new)).await;
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HYPER_BUFFER_BYTES.max(HYPER_MIN_BUFFER_BYTES))
        .max_headers(limits.max_headers);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                // Finish the request in flight, then close; an idle connection closes now.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            () = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!("closing a connection that moved no bytes");
                return;
            }
        }
    }
}

/// When a connection last moved bytes, in milliseconds since it was accepted.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once no bytes have moved for `bound`; never without a bound.
    async fn idle_for(&self, bound: Option<Duration>) {
        let Some(bound) = bound else {
            return std::future::pending().await;
        };
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + bound;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records when bytes move through it.
struct Watched<Io> {
    io: Io,
    activity: Activity,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Watched<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Watched<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Applies the per-request bounds of `limits` to `router`: target length (414), header
/// size (431), body size (413) and body time (408), each answered with the JSON error
/// shape. The body is read in full here, within both bounds, before any handler runs
/// (every endpoint takes a JSON document, never a stream), and the extractors' own body
/// limit is set to the same size. [`serve`] applies it; router tests apply it themselves.
pub fn edge_layers(router: Router, limits: &EdgeLimits) -> Router {
    let body_limit = DefaultBodyLimit::max(limits.max_body_bytes);
    let limits = Arc::new(limits.clone());
    router
        .layer(body_limit)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let limits = limits.clone();
            async move { bounded_request(&limits, request, next).await }
        }))
}

async fn bounded_request(limits: &EdgeLimits, request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return edge_error(
            StatusCode::URI_TOO_LONG,
            codes::URI_TOO_LONG,
            &format!(
                "the request target is {target} bytes long; at most {} are accepted",
                limits.max_uri_bytes
            ),
        );
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes {
        return edge_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            codes::HEADERS_TOO_LARGE,
            &format!(
                "the request headers take {header_bytes} bytes; at most {} are accepted",
                limits.max_header_bytes
            ),
        );
    }
    let too_large = || {
        edge_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is larger than {} bytes",
                limits.max_body_bytes
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let body = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "cannot read a request body");
            return edge_error(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "the request body could not be read",
            );
        }
        Err(_) => {
            return edge_error(
                StatusCode::REQUEST_TIMEOUT,
                codes::TIMEOUT,
                &format!(
                    "the request body did not arrive within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// An error the edge answers itself, in the API's JSON shape.
fn edge_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            field: None,
            details: Vec::new(),
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status != StatusCode::BAD_REQUEST {
        // Whatever the client sends next on this connection is suspect: start afresh.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_keeps_a_reserve() {
        use nix::sys::resource::{Resource, getrlimit};
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        assert_eq!(connection_limit(10, 0), 10.min(soft));
        assert!(connection_limit(usize::MAX, 256) <= soft.saturating_sub(256).max(1));
        assert_eq!(connection_limit(5, usize::MAX), 1);
    }
}
