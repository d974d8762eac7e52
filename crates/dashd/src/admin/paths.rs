//! Extractors for the ways a URL names a bot (`/v1/bots/{id}` or
//! `/v1/tenants/{tenant}/bots/{bot}`) and a flow version (`.../flows/{version}`, where
//! `active` means the active one). One handler serves both bot forms.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use dash_core::{BotRef, ValidationError, validate};
use uuid::Uuid;

use crate::error::ApiError;

/// The bot a request is about.
#[derive(Debug, Clone)]
pub struct BotPath(pub BotRef);

/// A bot and one of its flow versions (`None`: the active one).
#[derive(Debug, Clone)]
pub struct FlowVersionPath {
    pub bot: BotRef,
    pub version: Option<u32>,
}

async fn params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<HashMap<String, String>, ApiError> {
    Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(params)| params)
        .map_err(|rejection| {
            ApiError::BadRequest(format!(
                "invalid path: {}",
                validate::bounded(&rejection.body_text(), 200)
            ))
        })
}

fn bot_ref(params: &HashMap<String, String>) -> Result<BotRef, ApiError> {
    if let Some(id) = params.get("id") {
        return Uuid::parse_str(id).map(BotRef::Id).map_err(|_| {
            ApiError::Validation(ValidationError::new(
                "id",
                format!(
                    "{} is not a bot id (a UUID); address bots by name under /v1/tenants/TENANT/bots/BOT",
                    validate::quoted(id)
                ),
            ))
        });
    }
    let (Some(tenant), Some(bot)) = (params.get("tenant"), params.get("bot")) else {
        return Err(ApiError::BadRequest("the path names no bot".into()));
    };
    validate::slug("tenant", tenant)?;
    validate::slug("bot", bot)?;
    Ok(BotRef::Path {
        tenant: tenant.clone(),
        bot: bot.clone(),
    })
}

impl<S: Send + Sync> FromRequestParts<S> for BotPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(BotPath(bot_ref(&params(parts, state).await?)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for FlowVersionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = params(parts, state).await?;
        let bot = bot_ref(&params)?;
        let version = match params.get("version").map(String::as_str) {
            None | Some("active") => None,
            Some(text) => Some(text.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                ApiError::Validation(ValidationError::new(
                    "version",
                    format!(
                        "{} is not a flow version: use a number (1, 2...) or active",
                        validate::quoted(text)
                    ),
                ))
            })?),
        };
        Ok(FlowVersionPath { bot, version })
    }
}
