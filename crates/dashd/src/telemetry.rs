//! Tracing, set up once: human-readable text on a terminal, JSON lines otherwise (under
//! systemd or in containers), unless `log.format` says which. Also what keeps secrets
//! out of the logs: the HTTP trace layer both listeners use records a request's method
//! and path only (no query string, no userinfo, no headers, no bodies), and
//! [`redact_url`] trims any other URL before it is logged.

use std::io::IsTerminal;

use anyhow::Context;
use axum::http::Request;
use dash_core::config::{LogConfig, LogFormat};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse,
    HttpMakeClassifier, TraceLayer,
};
use tracing::Span;
use tracing_subscriber::EnvFilter;

/// Checks a `log.level` filter without installing it.
pub fn parse_filter(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::builder().parse(level).with_context(|| {
        format!(
            "log.level: {level:?} is not a valid filter (e.g. info, debug, dashd=debug,sqlx=warn)"
        )
    })
}

/// Installs the global subscriber. Logs go to stderr; stdout stays for command output.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = parse_filter(&config.level)?;
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    result.map_err(|err| anyhow::anyhow!("cannot install the logger: {err}"))
}

/// The trace layer for dashd's HTTP servers (public listener and admin socket): one span
/// per request with its method and path, and a closing event with status and latency.
/// The query string (tokens, phone numbers) and any userinfo never reach the logs, nor do
/// headers or bodies.
///
/// Failed responses are logged at debug, not error: a 503 refusing a flood (or a client's
/// 4xx) is an answer, not a fault, and logging each at error would let any client fill
/// the log. Faults are logged once where they are handled (`ApiError` for 500s).
pub fn http_trace_layer() -> TraceLayer<
    HttpMakeClassifier,
    RequestSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    DefaultOnFailure,
> {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
}

/// Makes the span of one HTTP request: `request{method=GET path=/v1/...}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> tower_http::trace::MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        // `Uri::path` holds neither the authority (with its userinfo) nor the query.
        tracing::debug_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        )
    }
}

/// A URL as it may be logged: scheme, host, port and path; userinfo, query and fragment
/// are dropped, as they may carry credentials. Text that is not a URL is cut the same way.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            // Neither can fail on a URL with a host.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.into()
        }
        _ => redact_unparsed(url),
    }
}

/// [`redact_url`] for text the URL parser refuses: cut at `?` or `#`, and drop
/// everything up to the last `@` of the authority.
fn redact_unparsed(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}{host}{path}")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tower::ServiceExt;

    use super::*;

    #[test]
    fn urls_lose_userinfo_query_and_fragment() {
        for (url, redacted) in [
            (
                "https://user:secret@api.example.com:8443/v1/items?token=abc&x=1#frag",
                "https://api.example.com:8443/v1/items",
            ),
            ("http://example.com/path?key=1", "http://example.com/path"),
            ("https://token@example.com/", "https://example.com/"),
            ("https://example.com", "https://example.com/"),
            ("http://[::1]:8080/a/b?c", "http://[::1]:8080/a/b"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn unparseable_urls_are_cut_the_same_way() {
        for (url, redacted) in [
            (
                "http://user:pw@exa mple.com/p?q=secret",
                "http://exa mple.com/p",
            ),
            ("not a url?token=secret", "not a url"),
            ("user:pw@host/path#x", "host/path"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    /// Collects what the subscriber writes.
    #[derive(Debug, Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn request_logs_hold_method_and_path_but_no_query_or_userinfo() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = axum::Router::new()
            .route(
                "/v1/items",
                axum::routing::post(|body: String| async move { format!("echo {body}") }),
            )
            .layer(http_trace_layer());
        let request = Request::post("http://user:hunter2@dashd.test/v1/items?token=s3cret")
            .header("authorization", "Bearer header-secret")
            .body(axum::body::Body::from("body-secret"))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert!(response.status().is_success());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"echo body-secret");
        drop(_guard);
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("method=POST"), "{logs}");
        assert!(logs.contains("path=/v1/items"), "{logs}");
        for secret in [
            "s3cret",
            "token=",
            "hunter2",
            "header-secret",
            "body-secret",
        ] {
            assert!(!logs.contains(secret), "{secret} leaked: {logs}");
        }
    }
}
