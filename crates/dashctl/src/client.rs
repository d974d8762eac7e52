//! The admin-API client: finds dashd's socket, sends JSON over HTTP on it, checks the
//! version handshake, and turns every failure into a [`CliError`] with a clear message.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dash_core::api::{
    ADMIN_API_VERSION, ErrorBody, HEADER_API_VERSION, HEADER_DAEMON_VERSION, codes,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CliError, CliResult, Failure};

/// Where dashd's socket is looked for when neither --socket nor DASHCTL_SOCKET is set:
/// dashd started in the current directory, then dashd under systemd.
pub const DEFAULT_SOCKETS: &[&str] = &["./dashd-data/dashd.sock", "/run/dashd/admin.sock"];

/// A connection to one dashd.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    socket: PathBuf,
    verbose: bool,
    warned: AtomicBool,
}

/// Picks the socket: `--socket`, then `DASHCTL_SOCKET` (when not empty), then the first
/// default that exists. A default that cannot even be looked at (a directory this user
/// may not enter) is a permission problem, not an absent daemon.
pub fn find_socket(explicit: Option<&Path>) -> CliResult<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("DASHCTL_SOCKET").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    for candidate in DEFAULT_SOCKETS {
        match std::fs::symlink_metadata(candidate) {
            Ok(_) => return Ok(PathBuf::from(candidate)),
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(permission_denied(Path::new(candidate)));
            }
            Err(_) => {}
        }
    }
    Err(CliError::new(
        Failure::Unreachable,
        format!(
            "dashd is not running: no admin socket at {}.\n{}",
            DEFAULT_SOCKETS.join(" or "),
            START_HINT
        ),
    ))
}

fn permission_denied(socket: &Path) -> CliError {
    CliError::new(
        Failure::Forbidden,
        format!(
            "permission denied on {}: run dashctl as root or as the user dashd runs as (or as a member of its admin.group)",
            socket.display()
        ),
    )
}

const START_HINT: &str = "Start it with `dashd` in the directory that holds dashd-data/ (`make run` in a source checkout, `systemctl start dashd` on a server), or point --socket or DASHCTL_SOCKET at its admin socket.";

impl Client {
    /// A client for the socket at `socket`.
    pub fn new(socket: PathBuf, verbose: bool) -> CliResult<Self> {
        let http = reqwest::Client::builder()
            .unix_socket(socket.clone())
            .build()
            .map_err(|err| {
                CliError::new(Failure::Daemon, format!("cannot set up the client: {err}"))
            })?;
        Ok(Self {
            http,
            socket,
            verbose,
            warned: AtomicBool::new(false),
        })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.send(Method::GET, path, None::<&()>).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> CliResult<T> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> CliResult<T> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> CliResult<T> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.send(Method::DELETE, path, None::<&()>).await
    }

    /// Opens a newline-delimited JSON stream (`GET path`).
    pub async fn stream(&self, path: &str) -> CliResult<EventStream> {
        if self.verbose {
            eprintln!("> GET {path} (stream, via {})", self.socket.display());
        }
        let response = self
            .http
            .get(format!("http://dashd{path}"))
            .send()
            .await
            .map_err(|err| self.connect_error(&err))?;
        self.handshake(&response)?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        Ok(EventStream {
            response,
            buffer: Vec::new(),
        })
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> CliResult<T> {
        let started = Instant::now();
        if self.verbose {
            eprintln!("> {method} {path} (via {})", self.socket.display());
        }
        // The host is ignored on a Unix socket; it only makes the URL well-formed.
        let mut request = self.http.request(method, format!("http://dashd{path}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.connect_error(&err))?;
        let status = response.status();
        if self.verbose {
            eprintln!("< {status} in {} ms", started.elapsed().as_millis());
        }
        self.handshake(&response)?;
        let bytes = response.bytes().await.map_err(|err| {
            CliError::new(
                Failure::Daemon,
                format!("reading dashd's answer failed: {err}"),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|err| {
                CliError::new(
                    Failure::Daemon,
                    format!("dashd sent an answer this dashctl does not understand: {err}"),
                )
            });
        }
        Err(api_error(status, &bytes))
    }

    /// Checks that a dashd answered, and warns once when its version differs from ours.
    fn handshake(&self, response: &reqwest::Response) -> CliResult<()> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let Some(daemon_version) = header(HEADER_DAEMON_VERSION) else {
            return Err(CliError::new(
                Failure::Unreachable,
                format!(
                    "{} is not a dashd admin socket (no version header in the answer)",
                    self.socket.display()
                ),
            ));
        };
        let api = header(HEADER_API_VERSION).and_then(|v| v.parse::<u32>().ok());
        if !self.warned.swap(true, Ordering::Relaxed)
            && let Some(warning) = version_warning(&daemon_version, api)
        {
            eprintln!("warning: {}", crate::sanitize::sanitize(&warning));
        }
        Ok(())
    }

    fn connect_error(&self, err: &reqwest::Error) -> CliError {
        let socket = self.socket.display();
        let io = std::error::Error::source(err).and_then(find_io_error);
        let message = match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::NotFound) => {
                format!("dashd is not running: no admin socket at {socket}.\n{START_HINT}")
            }
            Some(std::io::ErrorKind::ConnectionRefused) if !is_socket(&self.socket) => format!(
                "{socket} is not a socket: point --socket or DASHCTL_SOCKET at dashd's admin socket"
            ),
            Some(std::io::ErrorKind::ConnectionRefused) => format!(
                "dashd is not running: {socket} is left over from a daemon that stopped.\n{START_HINT}"
            ),
            Some(std::io::ErrorKind::PermissionDenied) => return permission_denied(&self.socket),
            _ => format!("cannot talk to dashd on {socket}: {err}"),
        };
        CliError::new(Failure::Unreachable, message)
    }
}

/// What to tell the user when dashd's versions differ from this dashctl's.
fn version_warning(daemon_version: &str, api: Option<u32>) -> Option<String> {
    if api != Some(ADMIN_API_VERSION) {
        Some(format!(
            "dashd {daemon_version} speaks admin API v{}, this dashctl {} speaks v{ADMIN_API_VERSION}: install the dashctl that ships with your dashd; commands may fail",
            api.map_or_else(|| "?".to_owned(), |v| v.to_string()),
            dash_core::VERSION,
        ))
    } else if daemon_version != dash_core::VERSION {
        Some(format!(
            "dashctl {} is talking to dashd {daemon_version}; they are compatible, but use matching versions when you can",
            dash_core::VERSION
        ))
    } else {
        None
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Events read one line at a time from a streaming answer.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event, or `None` when dashd closed the stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> CliResult<Option<T>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map(Some).map_err(|err| {
                    CliError::new(
                        Failure::Daemon,
                        format!("dashd sent an event this dashctl does not understand: {err}"),
                    )
                });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(err) => {
                    return Err(CliError::new(
                        Failure::Unreachable,
                        format!("the stream from dashd broke: {err}"),
                    ));
                }
            }
        }
    }
}

/// Walks an error's sources to the underlying I/O error, if any.
fn find_io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = err.source();
    }
    None
}

/// Maps an error answer to a failure kind and message.
fn api_error(status: StatusCode, bytes: &[u8]) -> CliError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(bytes).ok();
    let failure = match status {
        StatusCode::NOT_FOUND => Failure::NotFound,
        StatusCode::CONFLICT => Failure::Conflict,
        StatusCode::FORBIDDEN => Failure::Forbidden,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Failure::Invalid,
        _ => Failure::Daemon,
    };
    match parsed {
        Some(body) => {
            let message = if body.error.code == codes::INTERNAL {
                format!("{} (see dashd's log for the cause)", body.error.message)
            } else {
                body.error.message
            };
            CliError {
                failure,
                code: Some(body.error.code),
                message,
                field: body.error.field,
                details: body.error.details,
            }
        }
        None => CliError::new(failure, format!("dashd answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compared() {
        assert_eq!(
            version_warning(dash_core::VERSION, Some(ADMIN_API_VERSION)),
            None
        );
        let newer = version_warning("9.9.9", Some(ADMIN_API_VERSION)).unwrap();
        assert!(
            newer.contains("dashd 9.9.9") && newer.contains("compatible"),
            "{newer}"
        );
        let other_api = version_warning("9.9.9", Some(ADMIN_API_VERSION + 1)).unwrap();
        assert!(other_api.contains("admin API v2"), "{other_api}");
        assert!(
            version_warning(dash_core::VERSION, None)
                .unwrap()
                .contains("v?")
        );
    }

    #[test]
    fn error_answers_map_to_failures() {
        let body = br#"{"error":{"code":"conflict","message":"tenant acme already exists","field":"slug"}}"#;
        let err = api_error(StatusCode::CONFLICT, body);
        assert_eq!(err.failure, Failure::Conflict);
        assert_eq!(err.message, "tenant acme already exists");
        let err = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(err.failure, Failure::Daemon);
        assert!(err.message.contains("502"));
        let err = api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":{"code":"internal","message":"internal error"}}"#,
        );
        assert!(err.message.contains("dashd's log"));
    }
}
