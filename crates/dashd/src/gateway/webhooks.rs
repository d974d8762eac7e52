//! Provider webhooks on the public listener. Each delivery is read within
//! `providers.webhook_max_body_bytes` (413 past it), routed to the bot it belongs to,
//! verified with that bot's secret before anything is parsed (401 and nothing stored
//! when the signature or token is missing or wrong), normalised, stored, and answered
//! 200 at once: the flow runs later, in the pipeline.
//!
//! Routes: `/webhook/{provider}/{bot}` for `meta` and `official` (GET: the verify-token
//! challenge; POST: events), `twilio` and `evolution`; `/webhook/meta` (one callback URL
//! for a Meta app's numbers: entries are routed by `metadata.phone_number_id`);
//! `/webhook/bridge/{provider}` (routed by session).

use std::collections::BTreeSet;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dash_core::Bot;
use dash_core::provider::ProviderKind;
use uuid::Uuid;

use crate::adapter::{WebhookError, WebhookRequest, bridge, meta};
use crate::admin::messages::ingest_refused;
use crate::error::ApiError;
use crate::state::AppState;

/// The webhook routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/webhook/meta",
            get(meta_challenge_shared).post(meta_shared),
        )
        .route("/webhook/bridge/{provider}", post(post_bridge))
        .route(
            "/webhook/{provider}/{bot}",
            get(challenge_for_bot).post(post_for_bot),
        )
}

/// What every webhook handler receives besides its path.
struct Delivery {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Delivery {
    async fn read(
        state: &AppState,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Delivery, ApiError> {
        let limit =
            usize::try_from(state.config.providers.webhook_max_body_bytes).unwrap_or(usize::MAX);
        let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::TooLarge(format!(
                "webhook bodies are limited to {limit} bytes (providers.webhook_max_body_bytes)"
            ))
        })?;
        Ok(Delivery {
            method,
            uri,
            headers,
            body,
        })
    }

    fn request(&self) -> WebhookRequest<'_> {
        WebhookRequest {
            method: &self.method,
            path: self.uri.path(),
            query: self.uri.query(),
            headers: &self.headers,
            body: &self.body,
            now: chrono::Utc::now(),
        }
    }
}

/// A bot from the path, or 404.
async fn bot_of(state: &AppState, id: &str) -> Result<Bot, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("bot {id} not found")))?;
    state
        .pipeline
        .bot(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("bot {id} not found")))
}

fn refused(err: WebhookError) -> ApiError {
    match err {
        WebhookError::Signature(message) => ApiError::Unauthorized(message),
        WebhookError::NotConfigured(message) => ApiError::Unauthorized(format!(
            "cannot verify this webhook: {message} (dashctl provider set)"
        )),
        WebhookError::Malformed(message) => ApiError::BadRequest(message),
    }
}

/// A bot's client for verifying a webhook, or the answer: 503 when its settings cannot
/// be read now (the provider retries), 401 when it has none that verify. The cause is
/// logged, never sent to the caller.
async fn verifier(
    state: &AppState,
    bot: &Bot,
    kind: ProviderKind,
) -> Result<std::sync::Arc<dyn crate::adapter::WhatsAppProvider>, Response> {
    state
        .pipeline
        .providers()
        .client(bot.id, kind)
        .await
        .map_err(|err| {
            tracing::warn!(bot = %bot.path(), provider = %kind, error = %err, "webhook cannot be verified");
            let response = if err.class == dash_core::provider::ErrorClass::Retryable {
                ApiError::Unavailable("cannot verify this webhook now; retry later".into())
            } else {
                ApiError::Unauthorized(format!(
                    "cannot verify this webhook: {kind} is not configured for this bot"
                ))
            };
            response.into_response()
        })
}

/// Verifies and applies one delivery for one bot.
async fn deliver(
    state: &AppState,
    bot: &Bot,
    kind: ProviderKind,
    delivery: &Delivery,
) -> Result<(), Response> {
    let client = verifier(state, bot, kind).await?;
    let events = client
        .parse_webhook(&delivery.request())
        .map_err(|err| refused(err).into_response())?;
    for event in events {
        state
            .pipeline
            .provider_event(bot, kind, event)
            .await
            .map_err(ingest_refused)?;
    }
    Ok(())
}

fn ok() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response()
}

/// The providers whose webhook URL names the bot: `meta`, `official`, `twilio`,
/// `evolution`. Others (bridges are routed by session, the sandbox has no webhooks) are 404.
fn per_bot_provider(name: &str) -> Result<ProviderKind, ApiError> {
    match name.parse::<ProviderKind>() {
        Ok(
            kind @ (ProviderKind::Meta
            | ProviderKind::Official
            | ProviderKind::Twilio
            | ProviderKind::Evolution),
        ) => Ok(kind),
        _ => Err(ApiError::NotFound(format!(
            "no webhook for provider {:?}",
            dash_core::validate::bounded(name, 64)
        ))),
    }
}

async fn post_for_bot(
    State(state): State<AppState>,
    Path((provider, bot)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let kind = match per_bot_provider(&provider) {
        Ok(kind) => kind,
        Err(err) => return err.into_response(),
    };
    let delivery = match Delivery::read(&state, method, uri, headers, body).await {
        Ok(delivery) => delivery,
        Err(err) => return err.into_response(),
    };
    let bot = match bot_of(&state, &bot).await {
        Ok(bot) => bot,
        Err(err) => return err.into_response(),
    };
    match deliver(&state, &bot, kind, &delivery).await {
        Ok(()) => ok(),
        Err(response) => response,
    }
}

/// One callback for every number of a Meta app: each number's entries go to the bot
/// that owns it, verified with that bot's app secret. A body naming no known number
/// cannot be verified: 401.
async fn meta_shared(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let delivery = match Delivery::read(&state, method, uri, headers, body).await {
        Ok(delivery) => delivery,
        Err(err) => return err.into_response(),
    };
    let ids: BTreeSet<String> = meta::phone_number_ids(&delivery.body).into_iter().collect();
    let mut bots = Vec::new();
    for id in ids {
        match state
            .store
            .bot_by_route(ProviderKind::Meta.as_str(), &id)
            .await
        {
            Ok(Some(bot_id)) => match state.pipeline.bot(bot_id).await {
                Ok(Some(bot)) => bots.push(bot),
                Ok(None) => {}
                Err(err) => return ApiError::from(err).into_response(),
            },
            Ok(None) => {
                tracing::warn!(phone_number_id = id, "Meta webhook for a number no bot has");
            }
            Err(err) => return ApiError::from(err).into_response(),
        }
    }
    if bots.is_empty() {
        return ApiError::Unauthorized(
            "no bot has this webhook's phone number id: it cannot be verified".into(),
        )
        .into_response();
    }
    // Every bot's signature is checked before any event is applied.
    let mut verified = Vec::new();
    for bot in &bots {
        let client = match verifier(&state, bot, ProviderKind::Meta).await {
            Ok(client) => client,
            Err(response) => return response,
        };
        match client.parse_webhook(&delivery.request()) {
            Ok(events) => verified.push((bot, events)),
            Err(err) => return refused(err).into_response(),
        }
    }
    for (bot, events) in verified {
        for event in events {
            if let Err(err) = state
                .pipeline
                .provider_event(bot, ProviderKind::Meta, event)
                .await
            {
                return ingest_refused(err);
            }
        }
    }
    ok()
}

/// Bridge events name their session; the bot whose chain entry holds that session on
/// this provider verifies them with the bridge's token.
async fn post_bridge(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let kind = match provider.parse::<ProviderKind>() {
        Ok(kind) if kind.is_bridge() => kind,
        _ => return ApiError::NotFound(format!("no bridge provider {provider:?}")).into_response(),
    };
    let delivery = match Delivery::read(&state, method, uri, headers, body).await {
        Ok(delivery) => delivery,
        Err(err) => return err.into_response(),
    };
    let Some(session) = bridge::session_of(&delivery.body) else {
        return ApiError::Unauthorized(
            "bridge event without a session: it cannot be verified".into(),
        )
        .into_response();
    };
    let bot = match state.store.bot_by_route(kind.as_str(), &session).await {
        Ok(Some(bot_id)) => match state.pipeline.bot(bot_id).await {
            Ok(Some(bot)) => bot,
            Ok(None) => {
                return ApiError::UnknownSession(format!(
                    "no bot has {kind} session {session:?}: the event cannot be verified"
                ))
                .into_response();
            }
            Err(err) => return ApiError::from(err).into_response(),
        },
        // Answered apart from a bad signature: a bridge sets these events aside rather
        // than retrying them for ever (nothing is learnt that the session name did not
        // already tell, and nothing is stored).
        Ok(None) => {
            return ApiError::UnknownSession(format!(
                "no bot has {kind} session {session:?}: the event cannot be verified"
            ))
            .into_response();
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    match deliver(&state, &bot, kind, &delivery).await {
        Ok(()) => ok(),
        Err(response) => response,
    }
}

/// Meta's registration check on a bot's URL (`meta`, `official`): `hub.challenge`
/// echoed when `hub.verify_token` matches the bot's.
async fn challenge_for_bot(
    State(state): State<AppState>,
    Path((provider, bot)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let kind = match per_bot_provider(&provider) {
        Ok(kind @ (ProviderKind::Meta | ProviderKind::Official)) => kind,
        Ok(_) => return crate::error::method_not_allowed().await.into_response(),
        Err(err) => return err.into_response(),
    };
    let bot = match bot_of(&state, &bot).await {
        Ok(bot) => bot,
        Err(err) => return err.into_response(),
    };
    let client = match verifier(&state, &bot, kind).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    match client.challenge(uri.query().unwrap_or_default()) {
        Ok(challenge) => (StatusCode::OK, challenge).into_response(),
        Err(err) => ApiError::Forbidden(err.to_string()).into_response(),
    }
}

/// The shared callback's registration check: any bot on `meta` with that verify token.
async fn meta_challenge_shared(State(state): State<AppState>, uri: Uri) -> Response {
    let query = uri.query().unwrap_or_default();
    let entries = match state.store.all_providers().await {
        Ok(entries) => entries,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let registry = state.pipeline.providers();
    for entry in entries
        .iter()
        .filter(|entry| entry.provider == ProviderKind::Meta.as_str())
    {
        if let Ok(client) = registry.client(entry.bot_id, ProviderKind::Meta).await
            && let Ok(challenge) = client.challenge(query)
        {
            return (StatusCode::OK, challenge).into_response();
        }
    }
    ApiError::Forbidden("the verify token matches no bot on meta".into()).into_response()
}
