//! Versions of a bot's flows: each import is a new, numbered version (numbers are never
//! reused); one version is active, the one new conversations start on.

use async_trait::async_trait;
use dash_core::flow::Format;
use dash_core::{Bot, BotRef};
use sqlx::types::Json;

use super::sql::{Exec, Row, sql};
use super::tenants::find_bot;
use super::{SqlStore, StoreError, StoreResult, now};

/// Records of flow versions.
#[async_trait]
pub trait FlowStore: Send + Sync {
    /// Stores a new version of a bot's flows (numbered after the highest so far),
    /// optionally making it the active one. The document is already validated.
    async fn create_flow_version(
        &self,
        bot: &BotRef,
        new: &NewFlowVersion,
        activate: bool,
    ) -> StoreResult<StoredFlowVersion>;
    /// All versions of a bot's flows, oldest first.
    async fn list_flow_versions(&self, bot: &BotRef) -> StoreResult<Vec<StoredFlowVersion>>;
    /// One version; `None` means the active one.
    async fn flow_version(
        &self,
        bot: &BotRef,
        version: Option<u32>,
    ) -> StoreResult<StoredFlowVersion>;
    /// Makes `version` the one new conversations start on.
    async fn activate_flow_version(
        &self,
        bot: &BotRef,
        version: u32,
    ) -> StoreResult<StoredFlowVersion>;
    /// Deletes a version that is not active.
    async fn delete_flow_version(
        &self,
        bot: &BotRef,
        version: u32,
    ) -> StoreResult<StoredFlowVersion>;
}

/// A flow document about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFlowVersion {
    pub format: Format,
    pub source: String,
    /// The parsed document, as JSON.
    pub document: serde_json::Value,
}

/// A stored version of a bot's flows.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFlowVersion {
    pub version: u32,
    pub active: bool,
    pub format: Format,
    pub source: String,
    pub document: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn flow_version_from_row(row: &Row, active: Option<u32>) -> StoreResult<StoredFlowVersion> {
    let version = version_of(row.try_get("version")?).unwrap_or(0);
    Ok(StoredFlowVersion {
        version,
        active: active == Some(version),
        format: parse_format(&row.try_get::<String>("format")?)?,
        source: row.try_get("source")?,
        document: row.try_get::<Json<serde_json::Value>>("document")?.0,
        created_at: row.try_get("created_at")?,
    })
}

async fn find_flow_version<'c>(
    exec: impl Into<Exec<'c>>,
    bot: &Bot,
    version: Option<u32>,
) -> StoreResult<StoredFlowVersion> {
    let Some(wanted) = version.or(bot.flow_version) else {
        return Err(flow_version_not_found(bot, None));
    };
    let row = sql(
        "SELECT version, format, source, document, created_at FROM flow_versions \
                   WHERE bot_id = $1 AND version = $2",
    )
    .bind(bot.id)
    .bind(i64::from(wanted))
    .fetch_optional(exec)
    .await?;
    match row {
        Some(row) => flow_version_from_row(&row, bot.flow_version),
        None => Err(flow_version_not_found(bot, Some(wanted))),
    }
}

async fn set_active_flow_version<'c>(
    exec: impl Into<Exec<'c>>,
    bot: &Bot,
    version: u32,
) -> StoreResult<()> {
    sql("UPDATE bots SET active_flow_version = $1, updated_at = $2 WHERE id = $3")
        .bind(i64::from(version))
        .bind(now())
        .bind(bot.id)
        .execute(exec)
        .await?;
    Ok(())
}

#[async_trait]
impl FlowStore for SqlStore {
    async fn create_flow_version(
        &self,
        bot: &BotRef,
        new: &NewFlowVersion,
        activate: bool,
    ) -> StoreResult<StoredFlowVersion> {
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
        let next: i64 = sql("UPDATE bots SET last_flow_version = last_flow_version + 1 \
                             WHERE id = $1 RETURNING last_flow_version")
        .bind(record.id)
        .fetch_scalar(&mut tx)
        .await?;
        let version = version_of(Some(next)).unwrap_or(0);
        let created_at = now();
        sql(
            "INSERT INTO flow_versions (id, bot_id, version, format, source, document, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(record.id)
        .bind(i64::from(version))
        .bind(format_name(new.format))
        .bind(&new.source)
        .bind(Json(&new.document))
        .bind(created_at)
        .execute(&mut tx)
        .await?;
        if activate {
            set_active_flow_version(&mut tx, &record, version).await?;
        }
        tx.commit().await?;
        Ok(StoredFlowVersion {
            version,
            active: activate || record.flow_version == Some(version),
            format: new.format,
            source: new.source.clone(),
            document: new.document.clone(),
            created_at,
        })
    }

    async fn list_flow_versions(&self, bot: &BotRef) -> StoreResult<Vec<StoredFlowVersion>> {
        let record = find_bot(&self.pool, bot).await?;
        let rows = sql(
            "SELECT version, format, source, document, created_at FROM flow_versions \
                        WHERE bot_id = $1 ORDER BY version",
        )
        .bind(record.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| flow_version_from_row(row, record.flow_version))
            .collect()
    }

    async fn flow_version(
        &self,
        bot: &BotRef,
        version: Option<u32>,
    ) -> StoreResult<StoredFlowVersion> {
        let record = find_bot(&self.pool, bot).await?;
        find_flow_version(&self.pool, &record, version).await
    }

    async fn activate_flow_version(
        &self,
        bot: &BotRef,
        version: u32,
    ) -> StoreResult<StoredFlowVersion> {
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
        let mut found = find_flow_version(&mut tx, &record, Some(version)).await?;
        set_active_flow_version(&mut tx, &record, version).await?;
        tx.commit().await?;
        found.active = true;
        Ok(found)
    }

    async fn delete_flow_version(
        &self,
        bot: &BotRef,
        version: u32,
    ) -> StoreResult<StoredFlowVersion> {
        let mut tx = self.write().await?;
        let record = find_bot(&mut tx, bot).await?;
        if record.flow_version == Some(version) {
            return Err(active_version_conflict(&record, version));
        }
        let found = find_flow_version(&mut tx, &record, Some(version)).await?;
        sql("DELETE FROM flow_versions WHERE bot_id = $1 AND version = $2")
            .bind(record.id)
            .bind(i64::from(version))
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(found)
    }
}

fn flow_version_not_found(bot: &Bot, version: Option<u32>) -> StoreError {
    match version {
        Some(version) => StoreError::NotFound {
            what: format!("flow version {version} of bot {}", bot.path()),
        },
        None => StoreError::NotFound {
            what: format!("active flow version of bot {}", bot.path()),
        },
    }
}

fn active_version_conflict(bot: &Bot, version: u32) -> StoreError {
    StoreError::Conflict {
        message: format!(
            "flow version {version} is the active version of bot {}: activate another version first",
            bot.path()
        ),
        field: Some("version"),
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Toml => "toml",
        Format::Json => "json",
    }
}

fn parse_format(value: &str) -> StoreResult<Format> {
    match value {
        "toml" => Ok(Format::Toml),
        "json" => Ok(Format::Json),
        other => Err(StoreError::Schema(format!(
            "unknown flow format {other:?} in the database"
        ))),
    }
}

/// Converts a stored version number.
pub(crate) fn version_of(value: Option<i64>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}
