//! The admin API for `dashctl`: JSON over HTTP on a Unix socket. Every request is checked
//! against the peer's credentials ([`access`]); every response carries the daemon's
//! version and admin-API version so `dashctl` can warn about a mismatch.

pub mod access;
pub(crate) mod bots;
pub(crate) mod flows;
pub(crate) mod messages;
pub(crate) mod paths;
pub(crate) mod providers;
mod sessions;
pub mod socket;
mod status;
mod tenants;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use dash_core::api::{ADMIN_API_VERSION, HEADER_API_VERSION, HEADER_DAEMON_VERSION};

use crate::error::{method_not_allowed, not_found};
use crate::state::AppState;
use access::AdminAccess;

/// The admin router, with the access check and version headers applied.
pub fn router(state: AppState, access: AdminAccess) -> Router {
    Router::new()
        .route("/v1/status", get(status::show))
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/v1/tenants/{tenant}",
            get(tenants::show)
                .patch(tenants::update)
                .delete(tenants::delete),
        )
        .route(
            "/v1/tenants/{tenant}/bots",
            get(bots::list_of_tenant).post(bots::create),
        )
        .route(
            "/v1/tenants/{tenant}/bots/{bot}",
            get(bots::show).patch(bots::update).delete(bots::delete),
        )
        .route("/v1/bots", get(bots::list))
        .route("/v1/users", get(users::list).post(users::create))
        .route(
            "/v1/users/{user}",
            get(users::show).patch(users::update).delete(users::delete),
        )
        .route("/v1/users/{user}/password", post(users::set_password))
        .route("/v1/keys", get(users::list_keys).post(users::create_key))
        .route("/v1/keys/{id}", axum::routing::delete(users::revoke_key))
        .route("/v1/providers/status", get(providers::status_all))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/stream", get(sessions::stream))
        .route("/v1/sandbox/stream", get(messages::sandbox_feed))
        .route("/v1/queue", get(messages::queue))
        .route("/v1/queue/{id}", get(messages::queue_entry))
        .route("/v1/queue/{id}/retry", post(messages::queue_retry))
        .route("/v1/queue/{id}/cancel", post(messages::queue_cancel))
        .route(
            "/v1/bots/{id}",
            get(bots::show).patch(bots::update).delete(bots::delete),
        )
        .route("/v1/bots/{id}/flows", get(flows::list).post(flows::import))
        .route(
            "/v1/tenants/{tenant}/bots/{bot}/flows",
            get(flows::list).post(flows::import),
        )
        .route(
            "/v1/bots/{id}/flows/{version}",
            get(flows::show).delete(flows::delete),
        )
        .route(
            "/v1/tenants/{tenant}/bots/{bot}/flows/{version}",
            get(flows::show).delete(flows::delete),
        )
        .route(
            "/v1/bots/{id}/flows/{version}/activate",
            post(flows::activate),
        )
        .route(
            "/v1/tenants/{tenant}/bots/{bot}/flows/{version}/activate",
            post(flows::activate),
        )
        .merge(bot_routes("/v1/bots/{id}"))
        .merge(bot_routes("/v1/tenants/{tenant}/bots/{bot}"))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            Arc::new(access),
            access::authorize,
        ))
        .layer(middleware::map_response(version_headers))
        .layer(crate::telemetry::http_trace_layer())
}

/// Routes under a bot, for both ways of naming it.
fn bot_routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&format!("{prefix}/messages"), post(messages::send))
        .route(
            &format!("{prefix}/sandbox/messages"),
            post(messages::sandbox_inbound),
        )
        .route(
            &format!("{prefix}/sandbox/stream"),
            get(messages::sandbox_stream),
        )
        .route(
            &format!("{prefix}/conversations"),
            get(messages::conversations),
        )
        .route(
            &format!("{prefix}/conversations/{{contact}}"),
            get(messages::conversation),
        )
        .route(
            &format!("{prefix}/conversations/{{contact}}/resume"),
            post(messages::resume),
        )
        .route(
            &format!("{prefix}/conversations/{{contact}}/reset"),
            post(messages::reset),
        )
        .route(
            &format!("{prefix}/chain"),
            get(providers::show_chain).put(providers::set_chain),
        )
        .route(&format!("{prefix}/providers"), get(providers::list))
        .route(
            &format!("{prefix}/providers/{{provider}}"),
            get(providers::show)
                .put(providers::set)
                .delete(providers::delete),
        )
        .route(
            &format!("{prefix}/providers/{{provider}}/test"),
            post(providers::test),
        )
        .route(&format!("{prefix}/sessions"), get(sessions::of_bot))
        .route(
            &format!("{prefix}/sessions/{{provider}}"),
            get(sessions::show),
        )
        .route(
            &format!("{prefix}/sessions/{{provider}}/start"),
            post(sessions::start),
        )
        .route(
            &format!("{prefix}/sessions/{{provider}}/restart"),
            post(sessions::restart),
        )
        .route(
            &format!("{prefix}/sessions/{{provider}}/logout"),
            post(sessions::logout),
        )
}

async fn version_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        HEADER_DAEMON_VERSION,
        HeaderValue::from_static(dash_core::VERSION),
    );
    headers.insert(HEADER_API_VERSION, HeaderValue::from(ADMIN_API_VERSION));
    response
}
