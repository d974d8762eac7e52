//! Flow handlers: import a new version (validated, compiled once to prove it runs), list,
//! show, activate, delete. Each version keeps its source as imported (comments included)
//! and the parsed document.

use axum::extract::State;
use axum::http::StatusCode;
use dash_core::ValidationError;
use dash_core::api::{
    FlowSummary, FlowVersionDetail, FlowVersionInfo, ImportFlows, MAX_FLOW_DOCUMENT,
};
use dash_core::flow::{Document, FlowError, Format};

use super::paths::{BotPath, FlowVersionPath};
use crate::error::{ApiError, Json};
use crate::flow_runner::StepError;
use crate::state::AppState;
use crate::store::{NewFlowVersion, StoredFlowVersion};

pub async fn list(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
) -> Result<axum::Json<Vec<FlowVersionInfo>>, ApiError> {
    let versions = state.store.list_flow_versions(&bot).await?;
    Ok(axum::Json(versions.iter().map(info).collect()))
}

pub async fn import(
    State(state): State<AppState>,
    BotPath(bot): BotPath,
    Json(req): Json<ImportFlows>,
) -> Result<(StatusCode, axum::Json<FlowVersionDetail>), ApiError> {
    let owner = state.store.bot(&bot).await?;
    let stored = import_version(&state, &owner, req).await?;
    Ok((StatusCode::CREATED, axum::Json(stored)))
}

/// Validates a flow document and keeps it as `owner`'s next version (the admin socket
/// and the REST API both import through here).
pub(crate) async fn import_version(
    state: &AppState,
    owner: &dash_core::Bot,
    req: ImportFlows,
) -> Result<FlowVersionDetail, ApiError> {
    let (format, document) = check_document(state, owner.tenant_id, &req).await?;
    let new = NewFlowVersion {
        format,
        source: req.source,
        document: serde_json::to_value(&document).map_err(|err| ApiError::Internal(err.into()))?,
    };
    let bot = dash_core::BotRef::Id(owner.id);
    let stored = state
        .store
        .create_flow_version(&bot, &new, req.activate)
        .await?;
    tracing::info!(bot = %owner.path(), version = stored.version, active = stored.active, "flow version imported");
    Ok(detail(stored))
}

/// Parses and compiles a flow document the way an import does, keeping nothing.
pub(crate) async fn check_document(
    state: &AppState,
    tenant: uuid::Uuid,
    req: &ImportFlows,
) -> Result<(Format, Document), ApiError> {
    if req.source.len() > MAX_FLOW_DOCUMENT {
        return Err(
            ValidationError::new("source", "the flow document is larger than 1 MiB").into(),
        );
    }
    let format = req.format.unwrap_or_else(|| Format::sniff(&req.source));
    let source = req.source.clone();
    // Parsing a large document takes milliseconds: keep it off the reactor.
    let document = tokio::task::spawn_blocking(move || Document::parse(&source, format))
        .await
        .map_err(|err| ApiError::Internal(err.into()))?
        .map_err(|err| invalid(vec![err]))?;
    // Compiling renders every template once: a tenant's document is compiled in a flow
    // worker, within its memory and time bounds, never inside dashd.
    match state.pipeline.validate_flow(tenant, &document).await {
        Ok(Ok(())) => Ok((format, document)),
        Ok(Err(errors)) => Err(invalid(errors)),
        Err(StepError::Timeout { .. } | StepError::Crashed { .. }) => Err(ValidationError::new(
            "source",
            "the flow exceeded its memory or time limit while being validated (see docs/flows.md, limits)",
        )
        .into()),
        Err(StepError::Unavailable(message)) => Err(ApiError::Unavailable(message)),
        Err(StepError::Failed(message)) => Err(ApiError::Internal(anyhow::anyhow!(message))),
    }
}

pub async fn show(
    State(state): State<AppState>,
    path: FlowVersionPath,
) -> Result<axum::Json<FlowVersionDetail>, ApiError> {
    let stored = state.store.flow_version(&path.bot, path.version).await?;
    Ok(axum::Json(detail(stored)))
}

pub async fn activate(
    State(state): State<AppState>,
    path: FlowVersionPath,
) -> Result<axum::Json<FlowVersionInfo>, ApiError> {
    let version = required(path.version)?;
    let stored = state
        .store
        .activate_flow_version(&path.bot, version)
        .await?;
    tracing::info!(bot = %path.bot, version, "flow version activated");
    Ok(axum::Json(info(&stored)))
}

pub async fn delete(
    State(state): State<AppState>,
    path: FlowVersionPath,
) -> Result<axum::Json<FlowVersionInfo>, ApiError> {
    let version = required(path.version)?;
    // Conversations finish on the version they started with: it stays while any runs.
    let bot = state.store.bot(&path.bot).await?;
    let running = state
        .store
        .conversations_on_version(bot.id, version)
        .await?;
    if running > 0 {
        return Err(ApiError::Conflict {
            message: format!(
                "{running} conversation(s) of bot {} are still running on flow version {version}; they finish on it: try again later, or reset them (dashctl conversation reset)",
                bot.path()
            ),
            field: Some("version"),
        });
    }
    let stored = state.store.delete_flow_version(&path.bot, version).await?;
    state.pipeline.flows_changed(bot.id);
    tracing::info!(bot = %path.bot, version, "flow version deleted");
    Ok(axum::Json(info(&stored)))
}

fn required(version: Option<u32>) -> Result<u32, ApiError> {
    version.ok_or_else(|| {
        ValidationError::new("version", "give a version number, not `active`").into()
    })
}

fn invalid(errors: Vec<FlowError>) -> ApiError {
    ApiError::Invalid {
        message: format!(
            "the flow document has {} error{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        ),
        details: errors.iter().map(ToString::to_string).collect(),
    }
}

/// A version's summary: its flows, trigger and step counts.
pub(crate) fn info(stored: &StoredFlowVersion) -> FlowVersionInfo {
    let flows = serde_json::from_value::<Document>(stored.document.clone())
        .map(|doc| {
            doc.flows
                .iter()
                .map(|flow| FlowSummary {
                    id: flow.id.clone(),
                    triggers: flow.triggers.len(),
                    steps: flow.steps.len(),
                })
                .collect()
        })
        .unwrap_or_default();
    FlowVersionInfo {
        version: stored.version,
        active: stored.active,
        format: stored.format,
        size_bytes: stored.source.len() as u64,
        flows,
        created_at: stored.created_at,
    }
}

pub(crate) fn detail(stored: StoredFlowVersion) -> FlowVersionDetail {
    FlowVersionDetail {
        info: info(&stored),
        source: stored.source,
        document: stored.document,
    }
}
