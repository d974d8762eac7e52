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
        let mut response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let streaming = headers
            .get("content-type")
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        let text = if streaming {
            // An event stream never ends: what arrives within half a second.
            let mut text = String::new();
            while let Ok(Ok(Some(chunk))) =
                tokio::time::timeout(std::time::Duration::from_millis(500), response.chunk()).await
            {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            return Answer {
                status,
                headers,
                body: Value::String(text),
            };
        } else {
            response.text().await.unwrap()
        };
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
    pub product_id: String,
    pub customer_id: String,
    pub seller_id: String,
    pub order_id: String,
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
        let all = vec![
            self.tenant_id.clone(),
            self.bot_id.clone(),
            self.owner_id.clone(),
            self.key_id.clone(),
            self.key_prefix.clone(),
            self.product_id.clone(),
            self.customer_id.clone(),
            self.seller_id.clone(),
            self.order_id.clone(),
            format!("owner@{}.example.com", self.slug),
        ];
        all.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

/// [`tenant_without_data`], plus a seller, a product, a customer and an order made by
/// the owner through the API (four requests of the tenant's budget).
pub async fn tenant(admin: &Admin, rest: &Rest, slug: &str) -> TenantWorld {
    let mut world = tenant_without_data(admin, rest, slug).await;
    let made = |path: &'static str, body: Value| {
        let owner = world.owner.clone();
        async move {
            let answer = rest.call("POST", path, Some(&owner), Some(body)).await;
            assert_eq!(answer.status, 201, "POST {path}: {answer:?}");
            answer.body["id"].as_str().unwrap().to_owned()
        }
    };
    let seller_id = made("/api/v1/sellers", json!({"name": "Lucía"})).await;
    let product_id = made(
        "/api/v1/products",
        json!({"sku": "ALF-12", "name": "Alfajores x12", "price_cents": 450000, "currency": "ARS", "stock": 50}),
    )
    .await;
    let customer_id = made(
        "/api/v1/customers",
        json!({"contact": format!("+5491100000{}", slug.len()), "name": "Ana", "seller_id": seller_id}),
    )
    .await;
    let order_id = made(
        "/api/v1/orders",
        json!({"contact": "+5491199999999", "items": [{"sku": "ALF-12", "quantity": 2}], "seller_id": seller_id}),
    )
    .await;
    world.seller_id = seller_id;
    world.product_id = product_id;
    world.customer_id = customer_id;
    world.order_id = order_id;
    world
}

/// Creates a tenant with its bot (sandbox, echo flow), users and a key, through the
/// admin socket, and logs its users in through the REST API (no request of its budget).
pub async fn tenant_without_data(admin: &Admin, rest: &Rest, slug: &str) -> TenantWorld {
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
        product_id: String::new(),
        customer_id: String::new(),
        seller_id: String::new(),
        order_id: String::new(),
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
