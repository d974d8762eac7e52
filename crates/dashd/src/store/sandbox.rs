//! What the sandbox provider was sent, idempotent on the send's key.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::MessageBody;
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::sql;
use super::{SqlStore, StoreResult};

/// What the sandbox provider received.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSent {
    pub idempotency_key: String,
    pub contact: String,
    pub body: MessageBody,
    pub provider_message_id: String,
    /// Send calls made with this idempotency key (more than 1: sent again).
    pub calls: u32,
}

/// Storage of the sandbox provider.
#[async_trait]
pub trait SandboxStore: Send + Sync {
    /// The sandbox provider's "send": idempotent on the key; returns the message id.
    async fn sandbox_record(
        &self,
        key: &str,
        bot_id: Uuid,
        contact: &str,
        body: &MessageBody,
        now: DateTime<Utc>,
    ) -> StoreResult<String>;
    async fn sandbox_sent(&self, bot_id: Uuid) -> StoreResult<Vec<SandboxSent>>;
}

#[async_trait]
impl SandboxStore for SqlStore {
    async fn sandbox_record(
        &self,
        key: &str,
        bot_id: Uuid,
        contact: &str,
        body: &MessageBody,
        now: DateTime<Utc>,
    ) -> StoreResult<String> {
        let provider_id = format!("sandbox-{key}");
        sql(
            "INSERT INTO sandbox_messages (idempotency_key, bot_id, contact, body, provider_message_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO UPDATE SET calls = sandbox_messages.calls + 1",
        )
        .bind(key)
        .bind(bot_id)
        .bind(contact)
        .bind(Json(body))
        .bind(&provider_id)
        .bind(now)
            .write(&self.pool)
            .await?;
        Ok(provider_id)
    }

    async fn sandbox_sent(&self, bot_id: Uuid) -> StoreResult<Vec<SandboxSent>> {
        let rows = sql(
            "SELECT idempotency_key, contact, body, provider_message_id, calls FROM sandbox_messages WHERE bot_id = $1 ORDER BY created_at, idempotency_key",
        )
        .bind(bot_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SandboxSent {
                    idempotency_key: row.try_get("idempotency_key")?,
                    contact: row.try_get("contact")?,
                    body: row.try_get::<Json<MessageBody>>("body")?.0,
                    provider_message_id: row.try_get("provider_message_id")?,
                    calls: u32::try_from(row.try_get::<i64>("calls")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }
}
