//! The public REST API under `/api/v1` (seed paths such as `/api/bots` kept as aliases).
//!
//! Every route is declared once in [`routes`], with the [`Scope`] it requires; the router
//! and the isolation tests are both built from that table, so a route cannot be added
//! without a permission, and a test covers it as soon as it exists. A guarded route
//! authenticates the caller (a user's access token or a tenant's API key), checks the
//! scope (403), takes one request from the tenant's budget (429), and hands the handler a
//! [`Caller`], whose [`TenantScope`] every store call receives: another tenant's records
//! are then not found (404), never forbidden.

mod auth;
mod bots;
mod business;
mod conversations;
pub mod openapi;
mod team;

pub(crate) use team::{add_user, change_password, create_api_key};

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use dash_core::access::{ApiKey, Role, Scope, User};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::TenantScope;

/// One route of the REST API, as the router, the tests and the OpenAPI document see it.
#[derive(Debug, Clone)]
pub struct ApiRoute {
    pub method: Method,
    /// In axum's syntax: `/api/v1/bots/{bot}` (also OpenAPI's).
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// The JSON body it takes, if any.
    pub body: Option<openapi::Body>,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: logins and sign-up (they check their own credentials).
    Open,
    /// Any authenticated caller (about itself).
    Caller,
    /// A caller holding this permission.
    Needs(Scope),
}

/// The routes with their handlers.
struct Table(Vec<(ApiRoute, MethodRouter<AppState>)>);

impl Table {
    fn add<H: Handler<T, AppState>, T: 'static>(
        &mut self,
        method: Method,
        paths: &[&'static str],
        access: Access,
        summary: &'static str,
        handler: H,
    ) -> Added<'_> {
        let filter = match method {
            Method::POST => MethodFilter::POST,
            Method::PUT => MethodFilter::PUT,
            Method::PATCH => MethodFilter::PATCH,
            Method::DELETE => MethodFilter::DELETE,
            _ => MethodFilter::GET,
        };
        let handler = on(filter, handler);
        let first = self.0.len();
        for path in paths {
            self.0.push((
                ApiRoute {
                    method: method.clone(),
                    path,
                    access,
                    summary,
                    body: None,
                },
                handler.clone(),
            ));
        }
        Added { table: self, first }
    }
}

/// The routes one [`Table::add`] made, to declare their body.
struct Added<'t> {
    table: &'t mut Table,
    first: usize,
}

impl Added<'_> {
    /// The JSON body the routes take (for the OpenAPI document).
    fn body<B: utoipa::ToSchema>(self) {
        for (route, _) in &mut self.table.0[self.first..] {
            route.body = Some(openapi::Body::of::<B>());
        }
    }
}

/// Every route of the REST API. Paths of seeds 001 and 002 (`/api/bots`, ...) are
/// aliases of their `/api/v1` routes.
fn routes() -> Table {
    use Access as A;
    use Method as M;
    use Scope as S;
    let mut t = Table(Vec::new());
    t.add(
        M::POST,
        &["/api/auth/login", "/api/v1/auth/login"],
        A::Open,
        "Log in: access and refresh tokens",
        auth::login,
    )
    .body::<dash_core::access::Login>();
    t.add(
        M::POST,
        &["/api/auth/refresh", "/api/v1/auth/refresh"],
        A::Open,
        "Trade a refresh token for new tokens",
        auth::refresh,
    )
    .body::<dash_core::access::RefreshRequest>();
    t.add(
        M::POST,
        &["/api/auth/logout", "/api/v1/auth/logout"],
        A::Open,
        "End the login session of a refresh token",
        auth::logout,
    )
    .body::<dash_core::access::RefreshRequest>();
    t.add(
        M::POST,
        &["/api/auth/register", "/api/v1/auth/register"],
        A::Open,
        "Create a tenant and its owner (when sign-up is open)",
        auth::register,
    )
    .body::<dash_core::access::Register>();

    t.add(M::GET, &["/api/v1/me"], A::Caller, "The caller", auth::me);
    t.add(
        M::GET,
        &["/api/v1/tenants"],
        A::Needs(S::TenantsManage),
        "Every tenant (platform admins)",
        team::tenants,
    );

    t.add(
        M::GET,
        &["/api/v1/users"],
        A::Needs(S::TeamManage),
        "The tenant's users",
        team::list_users,
    );
    t.add(
        M::POST,
        &["/api/v1/users"],
        A::Needs(S::TeamManage),
        "Add a user",
        team::create_user,
    )
    .body::<dash_core::access::CreateUser>();
    t.add(
        M::GET,
        &["/api/v1/users/{user}"],
        A::Needs(S::TeamManage),
        "A user",
        team::show_user,
    );
    t.add(
        M::PATCH,
        &["/api/v1/users/{user}"],
        A::Needs(S::TeamManage),
        "Change a user's name, role or status",
        team::update_user,
    )
    .body::<dash_core::access::UpdateUser>();
    t.add(
        M::DELETE,
        &["/api/v1/users/{user}"],
        A::Needs(S::TeamManage),
        "Remove a user",
        team::delete_user,
    );
    t.add(
        M::POST,
        &["/api/v1/users/{user}/password"],
        A::Needs(S::TeamManage),
        "Set a user's password (ends its sessions)",
        team::set_password,
    )
    .body::<dash_core::access::SetPassword>();

    t.add(
        M::GET,
        &["/api/v1/keys", "/api/keys"],
        A::Needs(S::TeamManage),
        "The tenant's API keys",
        team::list_keys,
    );
    t.add(
        M::POST,
        &["/api/v1/keys", "/api/keys"],
        A::Needs(S::TeamManage),
        "Create an API key (shown once)",
        team::create_key,
    )
    .body::<dash_core::access::CreateApiKey>();
    t.add(
        M::DELETE,
        &["/api/v1/keys/{key}", "/api/keys/{key}"],
        A::Needs(S::TeamManage),
        "Revoke an API key",
        team::revoke_key,
    );

    t.add(
        M::GET,
        &["/api/v1/bots", "/api/bots"],
        A::Needs(S::BotsRead),
        "Bots",
        bots::list,
    );
    t.add(
        M::POST,
        &["/api/v1/bots", "/api/bots"],
        A::Needs(S::BotsWrite),
        "Create a bot",
        bots::create,
    )
    .body::<dash_core::api::CreateBot>();
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}", "/api/bots/{bot}"],
        A::Needs(S::BotsRead),
        "A bot",
        bots::show,
    );
    t.add(
        M::PATCH,
        &["/api/v1/bots/{bot}"],
        A::Needs(S::BotsWrite),
        "Change a bot",
        bots::update,
    )
    .body::<dash_core::api::UpdateBot>();
    t.add(
        M::PUT,
        &["/api/v1/bots/{bot}", "/api/bots/{bot}"],
        A::Needs(S::BotsWrite),
        "Change a bot",
        bots::update,
    )
    .body::<dash_core::api::UpdateBot>();
    t.add(
        M::DELETE,
        &["/api/v1/bots/{bot}", "/api/bots/{bot}"],
        A::Needs(S::BotsWrite),
        "Delete a bot",
        bots::delete,
    );
    t.add(
        M::POST,
        &["/api/v1/bots/{bot}/messages", "/api/bots/{bot}/send"],
        A::Needs(S::MessagesSend),
        "Send a text (an Idempotency-Key makes a repeat harmless)",
        bots::send,
    )
    .body::<dash_core::api::SendMessage>();
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}/flows"],
        A::Needs(S::BotsRead),
        "A bot's flow versions",
        bots::list_flows,
    );
    t.add(
        M::POST,
        &["/api/v1/bots/{bot}/flows"],
        A::Needs(S::BotsWrite),
        "Import a flow version",
        bots::import_flows,
    )
    .body::<dash_core::api::ImportFlows>();
    t.add(
        M::POST,
        &["/api/v1/bots/{bot}/flows/validate"],
        A::Needs(S::BotsRead),
        "Validate a flow document without keeping it",
        bots::validate_flows,
    )
    .body::<dash_core::api::ImportFlows>();
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}/flows/{version}"],
        A::Needs(S::BotsRead),
        "A flow version with its source",
        bots::show_flow,
    );
    t.add(
        M::POST,
        &["/api/v1/bots/{bot}/flows/{version}/activate"],
        A::Needs(S::BotsWrite),
        "Make a flow version the active one",
        bots::activate_flow,
    );
    t.add(
        M::GET,
        &["/api/v1/products", "/api/products"],
        A::Needs(S::ProductsRead),
        "The catalogue",
        business::list_products,
    );
    t.add(
        M::POST,
        &["/api/v1/products", "/api/products"],
        A::Needs(S::ProductsWrite),
        "Add a product",
        business::create_product,
    )
    .body::<dash_core::commerce::ProductInput>();
    t.add(
        M::GET,
        &["/api/v1/products/{product}", "/api/products/{product}"],
        A::Needs(S::ProductsRead),
        "A product",
        business::show_product,
    );
    t.add(
        M::PATCH,
        &["/api/v1/products/{product}"],
        A::Needs(S::ProductsWrite),
        "Change a product (price, stock, active...)",
        business::update_product,
    )
    .body::<dash_core::commerce::ProductInput>();
    t.add(
        M::DELETE,
        &["/api/v1/products/{product}"],
        A::Needs(S::ProductsWrite),
        "Remove a product",
        business::delete_product,
    );
    t.add(
        M::GET,
        &["/api/v1/customers"],
        A::Needs(S::CustomersRead),
        "Customers",
        business::list_customers,
    );
    t.add(
        M::POST,
        &["/api/v1/customers"],
        A::Needs(S::CustomersWrite),
        "Add a customer",
        business::create_customer,
    )
    .body::<dash_core::commerce::CustomerInput>();
    t.add(
        M::GET,
        &["/api/v1/customers/{customer}"],
        A::Needs(S::CustomersRead),
        "A customer with its captured variables",
        business::show_customer,
    );
    t.add(
        M::PATCH,
        &["/api/v1/customers/{customer}"],
        A::Needs(S::CustomersWrite),
        "Change a customer",
        business::update_customer,
    )
    .body::<dash_core::commerce::CustomerInput>();
    t.add(
        M::GET,
        &["/api/v1/sellers", "/api/sellers"],
        A::Needs(S::SellersRead),
        "Sellers",
        business::list_sellers,
    );
    t.add(
        M::POST,
        &["/api/v1/sellers", "/api/sellers"],
        A::Needs(S::SellersWrite),
        "Add a seller",
        business::create_seller,
    )
    .body::<dash_core::commerce::SellerInput>();
    t.add(
        M::GET,
        &["/api/v1/sellers/{seller}"],
        A::Needs(S::SellersRead),
        "A seller",
        business::show_seller,
    );
    t.add(
        M::PATCH,
        &["/api/v1/sellers/{seller}"],
        A::Needs(S::SellersWrite),
        "Change a seller",
        business::update_seller,
    )
    .body::<dash_core::commerce::SellerInput>();
    t.add(
        M::GET,
        &["/api/v1/orders", "/api/orders"],
        A::Needs(S::OrdersRead),
        "Orders, newest last (filters: status, customer_id)",
        business::list_orders,
    );
    t.add(
        M::POST,
        &["/api/v1/orders", "/api/orders"],
        A::Needs(S::OrdersWrite),
        "Create an order",
        business::create_order,
    )
    .body::<dash_core::commerce::NewOrder>();
    t.add(
        M::GET,
        &["/api/v1/orders/{order}", "/api/orders/{order}"],
        A::Needs(S::OrdersRead),
        "An order with its items",
        business::show_order,
    );
    t.add(
        M::PATCH,
        &["/api/v1/orders/{order}"],
        A::Needs(S::OrdersWrite),
        "Move an order along its states, or change its seller or notes",
        business::change_order,
    )
    .body::<dash_core::commerce::OrderChange>();
    t.add(
        M::GET,
        &["/api/v1/events"],
        A::Needs(S::EventsRead),
        "Server-Sent Events of the caller's tenant (Last-Event-ID resumes)",
        business::events,
    );
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}/conversations"],
        A::Needs(S::ConversationsRead),
        "A bot's conversations (filters: status, flow, contact prefix, since, until)",
        conversations::list,
    );
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}/conversations/{contact}"],
        A::Needs(S::ConversationsRead),
        "A conversation with its flow state and transcript",
        conversations::show,
    );
    t.add(
        M::POST,
        &["/api/v1/bots/{bot}/conversations/{contact}/take"],
        A::Needs(S::ConversationsWrite),
        "Take a conversation over: the bot goes silent for the contact",
        conversations::take,
    );
    t.add(
        M::POST,
        &["/api/v1/bots/{bot}/conversations/{contact}/messages"],
        A::Needs(S::ConversationsWrite),
        "Answer the contact as a person",
        conversations::reply,
    )
    .body::<conversations::Reply>();
    t.add(
        M::POST,
        &["/api/v1/bots/{bot}/conversations/{contact}/resume"],
        A::Needs(S::ConversationsWrite),
        "Hand the conversation back to the bot",
        conversations::resume,
    );
    t.add(
        M::GET,
        &["/api/openapi.json", "/api/v1/openapi.json"],
        A::Open,
        "This API's OpenAPI 3.1 document",
        openapi::json,
    );
    t.add(
        M::GET,
        &["/api/docs"],
        A::Open,
        "This API's endpoints, as a page",
        openapi::page,
    );
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}/chain"],
        A::Needs(S::BotsRead),
        "A bot's provider chain, with each provider's breaker",
        bots::show_chain,
    );
    t.add(
        M::PUT,
        &["/api/v1/bots/{bot}/chain"],
        A::Needs(S::BotsWrite),
        "Set a bot's provider chain and fallback thresholds",
        bots::set_chain,
    )
    .body::<dash_core::api::SetChain>();
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}/providers"],
        A::Needs(S::BotsRead),
        "A bot's provider settings (secrets shown only as set or not)",
        bots::list_providers,
    );
    t.add(
        M::GET,
        &["/api/v1/bots/{bot}/providers/{provider}"],
        A::Needs(S::BotsRead),
        "One provider's settings and the webhook to configure",
        bots::show_provider,
    );
    t.add(
        M::PUT,
        &["/api/v1/bots/{bot}/providers/{provider}"],
        A::Needs(S::BotsWrite),
        "Set a provider's settings and secrets (secrets are write-only)",
        bots::set_provider,
    )
    .body::<dash_core::api::SetProvider>();
    t.add(
        M::DELETE,
        &["/api/v1/bots/{bot}/providers/{provider}"],
        A::Needs(S::BotsWrite),
        "Remove a provider's settings",
        bots::delete_provider,
    );
    t
}

/// The route table, without handlers (for tests and the OpenAPI document).
pub fn route_table() -> Vec<ApiRoute> {
    routes().0.into_iter().map(|(route, _)| route).collect()
}

/// The REST API's routes, each behind its guard. CORS and the security headers
/// ([`edge_layers`]) wrap the whole public router.
pub fn router(state: AppState) -> Router<AppState> {
    let mut router = Router::new();
    for (route, handler) in routes().0 {
        let handler = match route.access {
            Access::Open => handler,
            access => handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), access),
                guard,
            )),
        };
        router = router.route(route.path, handler);
    }
    router
}

/// Wraps the public router (after its fallbacks are set, so that 404 and 405 answers get
/// them too) with CORS for the API's paths and the security headers.
pub fn edge_layers(router: Router, state: &AppState) -> Router {
    router
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .layer(middleware::map_response_with_state(
            state.config.clone(),
            security_headers,
        ))
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// `None` for a platform admin.
    pub tenant: Option<Uuid>,
    pub grants: Grants,
}

/// A person in a login session, or a program with a key.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The user as its session read it, this request.
    User {
        user: Box<User>,
        session: Uuid,
    },
    Key(Box<ApiKey>),
}

/// What the caller may do: a user's role, or a key's scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    Role(Role),
    Scopes(Vec<Scope>),
}

impl Caller {
    /// Whose records this caller reaches.
    pub fn scope(&self) -> TenantScope {
        match self.tenant {
            Some(tenant) => TenantScope::Tenant(tenant),
            None => TenantScope::All,
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        match &self.grants {
            Grants::Role(role) => role.grants(scope),
            Grants::Scopes(scopes) => scopes.contains(&scope),
        }
    }

    /// The caller's tenant, for creating records; a platform admin must name one.
    pub fn tenant_for_create(
        &self,
        named: Option<&str>,
    ) -> Result<crate::store::TenantRef, ApiError> {
        match (self.tenant, named) {
            (Some(own), _) => Ok(crate::store::TenantRef::Id(own)),
            (None, Some(named)) => Ok(crate::store::TenantRef::parse(named)),
            (None, None) => Err(dash_core::ValidationError::new(
                "tenant",
                "a platform admin names the tenant to create this in",
            )
            .into()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("a guarded handler ran without its guard"))
        })
    }
}

/// Authenticates, authorises and meters a request to a guarded route.
async fn guard(
    State((state, access)): State<(AppState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match authenticate(&state, request.headers()).await {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    if let Access::Needs(scope) = access
        && !caller.allows(scope)
    {
        return ApiError::Forbidden(format!(
            "this needs the {scope} permission, which the caller lacks"
        ))
        .into_response();
    }
    let budget = match caller.tenant {
        Some(tenant) => {
            let record = match state
                .store
                .tenant(&crate::store::TenantRef::Id(tenant))
                .await
            {
                Ok(record) => record,
                Err(crate::store::StoreError::NotFound { .. }) => {
                    return ApiError::Unauthorized("this caller's tenant no longer exists".into())
                        .into_response();
                }
                Err(err) => return ApiError::from(err).into_response(),
            };
            if record.status != dash_core::TenantStatus::Active {
                return ApiError::Forbidden(format!(
                    "tenant {} is suspended: its users and keys can do nothing until the operator reactivates it",
                    record.slug
                ))
                .into_response();
            }
            let limit = record
                .api_rate_per_minute
                .unwrap_or(state.config.api.rate_per_minute);
            match state.auth.take_request(tenant, limit) {
                Ok((remaining, reset)) => Some((limit, remaining, reset)),
                Err(retry_after_s) => {
                    let mut response = ApiError::RateLimited {
                        message: format!(
                            "this tenant's limit of {limit} requests a minute is used up: retry in {retry_after_s} s"
                        ),
                        retry_after_s,
                    }
                    .into_response();
                    rate_headers(response.headers_mut(), limit, 0, retry_after_s);
                    return response;
                }
            }
        }
        None => None,
    };
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    if let Some((limit, remaining, reset)) = budget {
        rate_headers(response.headers_mut(), limit, remaining, reset);
    }
    response
}

/// The `RateLimit-Policy` and `RateLimit` fields of the IETF draft on rate-limit headers.
fn rate_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset_s: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("\"tenant\";q={limit};w=60")) {
        headers.insert(HeaderName::from_static("ratelimit-policy"), value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("\"tenant\";r={remaining};t={reset_s}")) {
        headers.insert(HeaderName::from_static("ratelimit"), value);
    }
}

/// The caller behind `Authorization: Bearer <access token or API key>`.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = |message: &str| ApiError::Unauthorized(message.to_owned());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthorized("log in and send Authorization: Bearer <access token or API key>")
        })?
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("send Authorization: Bearer <access token or API key>"))?;
    if let Some((prefix, secret)) = crate::auth::split_api_key(token) {
        let invalid = || unauthorized("this API key is unknown, revoked or expired");
        let (key, hash) = state
            .store
            .api_key_by_prefix(prefix)
            .await?
            .ok_or_else(invalid)?;
        let now = chrono::Utc::now();
        if !crate::auth::key_matches(secret, &hash)
            || key.revoked_at.is_some()
            || key.expires_at.is_some_and(|at| at <= now)
        {
            return Err(invalid());
        }
        if state.auth.should_touch_key(key.id)
            && let Err(err) = state.store.touch_api_key(key.id, now).await
        {
            tracing::warn!(error = %err, "cannot record an API key's last use");
        }
        return Ok(Caller {
            tenant: Some(key.tenant_id),
            grants: Grants::Scopes(key.scopes.clone()),
            principal: Principal::Key(Box::new(key)),
        });
    }
    let claims = state.auth.check_access_token(token).ok_or_else(|| {
        unauthorized("the access token is invalid or expired: log in again or refresh it")
    })?;
    // The session decides, not the token alone: logout, a disabled user or a changed
    // password end it at once, and a changed role applies to the next request.
    let user = state
        .store
        .session_user(claims.jti)
        .await?
        .filter(|user| user.id == claims.sub)
        .ok_or_else(|| unauthorized("this login session has ended: log in again"))?;
    Ok(Caller {
        tenant: user.tenant_id,
        grants: Grants::Role(user.role),
        principal: Principal::User {
            user: Box::new(user),
            session: claims.jti,
        },
    })
}

/// The client's address: the connection's, or (from a trusted proxy) the last address
/// `X-Forwarded-For` names that is not itself a trusted proxy.
pub fn client_address(
    state: &AppState,
    parts_peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let peer = parts_peer.map(|peer| peer.ip())?;
    let trusted = &state.config.api.trusted_proxies;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|hop| !trusted.contains(hop))
        .or(Some(peer))
}

/// The connection's peer, when served by the real listener (absent in router tests).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| *peer),
        ))
    }
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `?cursor=&limit=` of a list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Default and largest page sizes.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

impl PageQuery {
    /// The page size asked for, within bounds.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
            Some(_) => Err(dash_core::ValidationError::new(
                "limit",
                format!("a page holds 1 to {MAX_PAGE} items"),
            )
            .into()),
        }
    }

    /// The cursor as the id it stands for.
    pub fn after(&self) -> Result<Option<Uuid>, ApiError> {
        self.cursor
            .as_deref()
            .map(|cursor| {
                Uuid::parse_str(cursor).map_err(|_| {
                    ApiError::from(dash_core::ValidationError::new(
                        "cursor",
                        "pass back the next_cursor of the previous page",
                    ))
                })
            })
            .transpose()
    }
}

/// Builds a page from one more item than asked for (which says whether more follow).
pub fn page<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|item| id(item).to_string())
    } else {
        None
    };
    Page {
        data: items,
        next_cursor,
    }
}

/// CORS for the configured origins only: a preflight from one is answered here; any
/// other origin gets no CORS headers, so browsers refuse to hand it the response.
async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .filter(|origin| {
            state
                .config
                .api
                .cors_origins
                .iter()
                .any(|allowed| allowed == origin)
        })
        .map(str::to_owned);
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        match &origin {
            Some(_) => axum::http::StatusCode::NO_CONTENT.into_response(),
            None => {
                ApiError::Forbidden("this origin may not call the API (api.cors_origins)".into())
                    .into_response()
            }
        }
    } else {
        next.run(request).await
    };
    if let Some(origin) = origin
        && let Ok(origin) = HeaderValue::from_str(&origin)
    {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(
                    "authorization, content-type, idempotency-key, last-event-id",
                ),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        } else {
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("ratelimit, ratelimit-policy, retry-after"),
            );
        }
    }
    response
}

/// Headers every API answer carries.
async fn security_headers(
    State(config): State<std::sync::Arc<dash_core::config::Config>>,
    mut response: Response,
) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    if config.api.behind_tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}
