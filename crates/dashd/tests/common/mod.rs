//! What the daemon tests that drive a real in-process dashd share: its configuration
//! (temporary data directory, port 0, flow workers from this build's `dashd`) and a
//! client for its admin socket.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

pub mod loopback;
pub mod rest;

use std::path::Path;

use dash_core::config::Config;
use serde_json::{Value, json};

/// A flow answering every message with its text.
pub const ECHO: &str = r#"
default_flow = "echo"
[[flows]]
id = "echo"
steps = [{ id = "say", kind = "end", text = "{{ input }}" }]
"#;

/// dashd in `dir` (data in `dir/dashd-data`), on port 0, without the per-bot rate limit,
/// its flow workers started from this build's `dashd`.
pub fn config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.join("dashd-data"),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.dispatcher.bot_rate_per_minute = 0;
    config.pipeline.flow_worker_exe = Some(env!("CARGO_BIN_EXE_dashd").into());
    config
}

/// A client of the admin socket of the dashd configured by [`config`] in `dir`.
pub struct Admin(pub reqwest::Client);

impl Admin {
    pub fn new(dir: &Path) -> Admin {
        Admin(
            reqwest::Client::builder()
                .unix_socket(dir.join("dashd-data/dashd.sock"))
                .build()
                .unwrap(),
        )
    }

    /// A request that must succeed; its JSON answer.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let response = self
            .0
            .request(method.parse().unwrap(), format!("http://dashd{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// A tenant and its sandbox bot running `flow` (active).
    pub async fn bot(&self, tenant: &str, bot: &str, flow: &str) {
        self.call("POST", "/v1/tenants", json!({ "slug": tenant }))
            .await;
        self.call(
            "POST",
            &format!("/v1/tenants/{tenant}/bots"),
            json!({"name": bot, "settings": {"chain": ["sandbox"]}}),
        )
        .await;
        self.call(
            "POST",
            &format!("/v1/tenants/{tenant}/bots/{bot}/flows"),
            json!({"source": flow, "activate": true}),
        )
        .await;
    }

    /// Tenant `acme` with bot `sales` on the echo flow, whose chain is the Cloud API only,
    /// at `graph_url`; returns the webhook URL on `http_addr`.
    pub async fn echo_bot_on_meta(
        &self,
        http_addr: &std::net::SocketAddr,
        graph_url: &str,
        phone_number_id: &str,
        app_secret: &str,
    ) -> String {
        self.call("POST", "/v1/tenants", json!({"slug": "acme"}))
            .await;
        let bot = self
            .call("POST", "/v1/tenants/acme/bots", json!({"name": "sales"}))
            .await;
        self.call(
            "POST",
            "/v1/tenants/acme/bots/sales/flows",
            json!({"source": ECHO, "activate": true}),
        )
        .await;
        self.call(
            "PUT",
            "/v1/tenants/acme/bots/sales/providers/meta",
            json!({"settings": {"base_url": graph_url, "phone_number_id": phone_number_id},
                   "secrets": {"access_token": "EAAG-test-token", "app_secret": app_secret, "verify_token": "v"}}),
        )
        .await;
        self.call(
            "PUT",
            "/v1/tenants/acme/bots/sales/chain",
            json!({"chain": ["meta"]}),
        )
        .await;
        format!(
            "http://{http_addr}/webhook/meta/{}",
            bot["id"].as_str().unwrap_or_default()
        )
    }

    /// A customer's message to a sandbox bot; the intake's answer.
    pub async fn say(&self, tenant: &str, bot: &str, from: &str, text: &str) -> Value {
        self.call(
            "POST",
            &format!("/v1/tenants/{tenant}/bots/{bot}/sandbox/messages"),
            json!({"from": from, "text": text}),
        )
        .await
    }
}
