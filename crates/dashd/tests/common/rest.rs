//! A REST API client for tests, and a world of two tenants with the same resources:
//! a bot with a flow, an owner, an agent, a viewer and an API key holding every scope a
//! key may hold.

use std::path::Path;

use dash_core::access::Scope;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{Admin, ECHO};

/// Every test user's password.
pub const PASSWORD: &str = "Tienda-Lunes-42";

/// A client of the public listener.
pub struct Rest {
    pub base: String,
    pub client: reqwest::Client,
}

/// One answer: status, headers and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Rest {
    pub fn new(addr: std::net::SocketAddr) -> Rest {
        Rest {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    /// A request with an optional bearer credential and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_from(None, method, path, bearer, body).await
    }

    /// [`call`](Self::call) through a proxy that names the client `from` in
    /// `X-Forwarded-For`.
    pub async fn call_from(
        &self,
        from: Option<&str>,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(from) = from {
            request = request.header("x-forwarded-for", format!("203.0.113.250, {from}"));
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Logs in; the whole answer (tokens and user).
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let answer = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(answer.status, 200, "login {email}: {:?}", answer.body);
        answer.body
    }
}

/// One tenant's resources and credentials.
#[derive(Debug, Clone)]
pub struct TenantWorld {
    pub slug: String,
    pub tenant_id: String,
    pub bot_id: String,
    pub owner_id: String,
    pub key_id: String,
    pub key_prefix: String,
    /// Access tokens by role.
    pub owner: String,
    pub agent: String,
    pub viewer: String,
    /// A key with every scope a key may hold.
    pub key: String,
}

impl TenantWorld {
    /// Every identifier of this tenant that must never reach another tenant.
    pub fn secrets(&self) -> Vec<String> {
        vec![
            self.tenant_id.clone(),
            self.bot_id.clone(),
            self.owner_id.clone(),
            self.key_id.clone(),
            self.key_prefix.clone(),
            format!("owner@{}.example.com", self.slug),
        ]
    }
}

/// Creates a tenant with its bot (sandbox, echo flow), users and a key, through the
/// admin socket, and logs its users in through the REST API.
pub async fn tenant(admin: &Admin, rest: &Rest, slug: &str) -> TenantWorld {
    let tenant = admin
        .call("POST", "/v1/tenants", json!({"slug": slug}))
        .await;
    let bot = admin
        .call(
            "POST",
            &format!("/v1/tenants/{slug}/bots"),
            json!({"name": "shop"}),
        )
        .await;
    let bot_id = bot["id"].as_str().unwrap().to_owned();
    admin
        .call(
            "POST",
            &format!("/v1/bots/{bot_id}/flows"),
            json!({"source": ECHO, "activate": true}),
        )
        .await;
    let mut tokens = Vec::new();
    let mut owner_id = String::new();
    for role in ["owner", "agent", "viewer"] {
        let email = format!("{role}@{slug}.example.com");
        let user = admin
            .call(
                "POST",
                "/v1/users",
                json!({"tenant": slug, "email": email, "role": role, "password": PASSWORD}),
            )
            .await;
        if role == "owner" {
            owner_id = user["id"].as_str().unwrap().to_owned();
        }
        let login = rest.login(&email, PASSWORD).await;
        tokens.push(login["access_token"].as_str().unwrap().to_owned());
    }
    let scopes: Vec<&str> = Scope::ALL
        .iter()
        .filter(|s| s.grantable_to_keys())
        .map(|s| s.as_str())
        .collect();
    let key = admin
        .call(
            "POST",
            "/v1/keys",
            json!({"tenant": slug, "name": "everything", "scopes": scopes}),
        )
        .await;
    TenantWorld {
        slug: slug.to_owned(),
        tenant_id: tenant["id"].as_str().unwrap().to_owned(),
        bot_id,
        owner_id,
        key_id: key["id"].as_str().unwrap().to_owned(),
        key_prefix: key["prefix"].as_str().unwrap().to_owned(),
        owner: tokens[0].clone(),
        agent: tokens[1].clone(),
        viewer: tokens[2].clone(),
        key: key["key"].as_str().unwrap().to_owned(),
    }
}

/// A platform admin, logged in: its access token.
pub async fn platform_admin(admin: &Admin, rest: &Rest) -> String {
    admin
        .call(
            "POST",
            "/v1/users",
            json!({"email": "root@platform.example.com", "role": "admin", "password": PASSWORD}),
        )
        .await;
    rest.login("root@platform.example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A running dashd for REST tests, with a known token key and a high request budget.
pub async fn daemon(
    dir: &Path,
    adjust: impl FnOnce(&mut dash_core::config::Config),
) -> dashd::Daemon {
    let mut config = super::config(dir);
    config.api.jwt_secret = Some(dash_core::config::Secret::new(TEST_JWT_SECRET));
    config.api.rate_per_minute = 100_000;
    adjust(&mut config);
    dashd::start(config).await.unwrap()
}

/// The token key of [`daemon`], for tests that forge tokens.
pub const TEST_JWT_SECRET: &str = "a test key for access tokens, 32+ bytes long";
