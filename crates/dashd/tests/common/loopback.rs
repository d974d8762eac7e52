//! A loopback HTTP server standing in for a provider: records every request and answers
//! from a queue (the provider tests check each request against the documented format).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The query string, when there is one.
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body as JSON (Null when empty).
    pub body: Value,
}

#[derive(Debug, Clone, Default)]
pub struct Server {
    pub url: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
}

impl Server {
    pub async fn start() -> Server {
        let mut server = Server::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        server.url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(record).with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    /// Queues the next answer.
    pub fn answer(&self, status: u16, body: impl Into<String>) {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, body.into()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected one request: {requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

async fn record(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("requests carry JSON")
    };
    server.log.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
    });
    let (status, body) = server
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, "{}".to_owned()));
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
