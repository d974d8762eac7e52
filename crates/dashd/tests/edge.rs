//! The network edge against real sockets: slow clients are cut off, oversized requests
//! get JSON errors, a flooded listener leaves another one answering, and shutdown lets
//! the request in flight finish. Each test serves a small router with `server::serve`;
//! the last ones start a whole daemon with `dashd::start`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use dashd::server::{self, EdgeLimits, UnixEdge};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Limits small enough for tests to reach quickly.
fn tight() -> EdgeLimits {
    EdgeLimits {
        max_connections: 64,
        header_timeout: Some(Duration::from_millis(500)),
        body_timeout: Duration::from_millis(500),
        idle_timeout: Some(Duration::from_secs(30)),
        max_body_bytes: 64 * 1024,
        max_uri_bytes: 8 * 1024,
        max_header_bytes: 16 * 1024,
        max_headers: 100,
    }
}

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: dashd::error::Json<Echo>| async move { body.0.text }),
        )
        .route("/forever", get(std::future::pending::<String>))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Echo {
    text: String,
    #[serde(default)]
    count: Option<u32>,
}

struct Served {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve_tcp(router: Router, limits: EdgeLimits) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve(listener, router, limits, shutdown.clone()));
    Served {
        addr,
        shutdown,
        task,
    }
}

/// Sends `request` as is and reads the answer until the server closes the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Answer {
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream).await
}

async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> Answer {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server neither answered nor closed")
        .ok();
    Answer::parse(&bytes)
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Self {
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(bytes.len(), |at| at + 4);
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        Answer {
            status,
            head,
            body: bytes[split..].to_vec(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap().to_owned()
    }
}

fn get_request(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_client_sending_headers_slowly_is_cut_off() {
    let served = serve_tcp(app(), tight()).await;
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    // One header line every 200 ms: each arrives well within any per-read timeout, but
    // the whole head never completes.
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("a slow client kept its connection");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn oversized_bodies_get_413_as_json() {
    let served = serve_tcp(app(), tight()).await;
    // Declared too large: refused before the body is read.
    let stream = TcpStream::connect(served.addr).await.unwrap();
    let answer = exchange(
        stream,
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.error_code(), "payload_too_large");

    // Chunked, with no length announced: cut when the limit is passed.
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'a'; 16 * 1024];
    for _ in 0..8 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.error_code(), "payload_too_large");
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408_as_json() {
    let served = serve_tcp(app(), tight()).await;
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"te")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.error_code(), "request_timeout");
}

#[tokio::test]
async fn long_targets_and_large_headers_get_json_errors() {
    let served = serve_tcp(app(), tight()).await;
    let target = format!("/ok?q={}", "x".repeat(10 * 1024));
    let answer = exchange(
        TcpStream::connect(served.addr).await.unwrap(),
        &get_request(&target),
    )
    .await;
    assert_eq!(answer.status, 414, "{answer:?}");
    assert_eq!(answer.error_code(), "uri_too_long");
    assert!(answer.body.len() < 1024);

    let request = format!(
        "GET /ok HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(20 * 1024)
    );
    let answer = exchange(
        TcpStream::connect(served.addr).await.unwrap(),
        request.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 431, "{answer:?}");
    assert_eq!(answer.error_code(), "headers_too_large");
    assert!(answer.body.len() < 1024);

    let answer = exchange(
        TcpStream::connect(served.addr).await.unwrap(),
        &get_request("/ok"),
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn an_invalid_body_is_not_echoed_back() {
    let limits = EdgeLimits {
        max_body_bytes: 2 * 1024 * 1024,
        ..tight()
    };
    let served = serve_tcp(app(), limits).await;
    let huge = "z".repeat(1024 * 1024);
    for body in [
        // serde quotes a value of the wrong type, and an unknown field's name.
        format!("{{\"text\": \"a\", \"count\": \"{huge}\"}}"),
        format!("{{\"text\": \"a\", \"{huge}\": 1}}"),
        format!("{{\"text\": \"a\", \"count\": \"\\u001b]0;{huge}\"}}"),
    ] {
        let request = format!(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = exchange(
            TcpStream::connect(served.addr).await.unwrap(),
            request.as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 400, "{}", answer.head);
        assert_eq!(answer.error_code(), "bad_request");
        assert!(
            answer.body.len() < 2048,
            "{} bytes of error",
            answer.body.len()
        );
    }
}

#[tokio::test]
async fn a_connection_moving_no_bytes_is_closed() {
    let limits = EdgeLimits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..tight()
    };
    let served = serve_tcp(app(), limits).await;
    let started = Instant::now();
    let answer = exchange(
        TcpStream::connect(served.addr).await.unwrap(),
        &get_request("/forever"),
    )
    .await;
    assert_eq!(answer.status, 0, "a handler that never answers: {answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_flooded_listener_leaves_the_other_one_answering() {
    let dir = tempfile::tempdir().unwrap();
    let public_limits = EdgeLimits {
        max_connections: 4,
        header_timeout: Some(Duration::from_secs(60)),
        ..tight()
    };
    let public = serve_tcp(app(), public_limits).await;
    let socket = dir.path().join("admin.sock");
    let admin_listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let admin_shutdown = CancellationToken::new();
    let admin_task = tokio::spawn(server::serve(
        UnixEdge {
            listener: admin_listener,
            peer: |_: &UnixStream| (),
        },
        app(),
        EdgeLimits {
            max_connections: 4,
            ..tight()
        },
        admin_shutdown.clone(),
    ));

    // Far more connections than the public limit, each sending nothing.
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(TcpStream::connect(public.addr).await.unwrap());
    }
    // One more public client waits for a slot: its request is not served yet.
    let mut waiting = TcpStream::connect(public.addr).await.unwrap();
    waiting.write_all(&get_request("/ok")).await.unwrap();

    for _ in 0..5 {
        let started = Instant::now();
        let answer = exchange(
            UnixStream::connect(&socket).await.unwrap(),
            &get_request("/ok"),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    // Freeing the flood's slots lets the waiting client through.
    drop(flood);
    let answer = read_answer(&mut waiting).await;
    assert_eq!(answer.status, 200, "{answer:?}");

    public.shutdown.cancel();
    admin_shutdown.cancel();
    public.task.await.unwrap().unwrap();
    admin_task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_the_request_in_flight_finish() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let router = {
        let (entered, release) = (entered.clone(), release.clone());
        Router::new().route(
            "/slow",
            get(move || async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }),
        )
    };
    let served = serve_tcp(router, tight()).await;
    let mut in_flight = TcpStream::connect(served.addr).await.unwrap();
    in_flight.write_all(&get_request("/slow")).await.unwrap();
    entered.notified().await;

    served.shutdown.cancel();
    // The listening socket closes: new clients are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(served.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!served.task.is_finished());

    release.notify_one();
    let answer = read_answer(&mut in_flight).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"done");
    tokio::time::timeout(Duration::from_secs(5), served.task)
        .await
        .expect("serve did not return after its connections finished")
        .unwrap()
        .unwrap();
}

/// A `dashd` process, killed when dropped.
struct Daemon {
    child: std::process::Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the `dashd` binary allowed `open_files` descriptors (as `LimitNOFILE`
    /// would), and waits until its admin socket answers.
    async fn start(open_files: u32) -> (Daemon, SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg(env!("CARGO_BIN_EXE_dashd"))
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir.path());
        for (name, _) in std::env::vars() {
            if name.starts_with("DASHD_") || name == "NOTIFY_SOCKET" {
                command.env_remove(name);
            }
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            socket: dir.path().join("dashd-data/dashd.sock"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "dashd did not start");
            if let Ok(stream) = UnixStream::connect(&daemon.socket).await {
                let answer = exchange(stream, &get_request("/v1/status")).await;
                if answer.status == 200 {
                    let listen = answer.json()["listen"].as_str().unwrap().parse().unwrap();
                    return (daemon, listen);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// End to end: needs `lib.rs` to serve both listeners with `server::serve` and the
/// public limit from `server::connection_limit`.
#[tokio::test]
async fn a_flood_on_the_public_port_leaves_the_admin_socket_answering() {
    let (daemon, public) = Daemon::start(256).await;
    // More connections than the daemon has descriptors, each sending nothing, until the
    // listen backlog is full too (then a connect hangs: stop there).
    let mut flood = Vec::new();
    for _ in 0..400 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(public)).await {
            Ok(Ok(stream)) => flood.push(stream),
            _ => break,
        }
    }
    for _ in 0..5 {
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(2), async {
            exchange(
                UnixStream::connect(&daemon.socket).await.unwrap(),
                &get_request("/v1/status"),
            )
            .await
        })
        .await
        .expect("the admin socket did not answer while the public port was flooded");
        assert_eq!(answer.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    drop(flood);

    // The public port's own errors are JSON too.
    let target = format!("/health?{}", "x".repeat(10 * 1024));
    let answer = exchange(
        TcpStream::connect(public).await.unwrap(),
        &get_request(&target),
    )
    .await;
    assert_eq!(answer.status, 414, "{answer:?}");
    assert_eq!(answer.error_code(), "uri_too_long");
}
