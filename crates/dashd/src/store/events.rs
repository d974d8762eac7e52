//! The event log the REST API streams to dashboards (`GET /api/v1/events`): one row per
//! event, numbered across tenants, read back per tenant after a given number (a client's
//! `Last-Event-ID`), and trimmed to the newest events of each tenant.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::{Tx, sql};
use super::{SqlStore, StoreResult};

/// One event of a tenant.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ApiEvent {
    /// Its number: increasing, the SSE `id`.
    pub seq: i64,
    /// `order.created`, `order.updated`, `message.in`, ...
    pub kind: String,
    pub data: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Reading and trimming the event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// A tenant's events after `after` (oldest first), at most `limit`.
    async fn events_after(
        &self,
        tenant: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<ApiEvent>>;
    /// The newest event number of a tenant (0 when none).
    async fn last_event(&self, tenant: Uuid) -> StoreResult<i64>;
    /// Writes an event of its own (events of records are written with them).
    async fn record_event(
        &self,
        tenant: Uuid,
        kind: &str,
        data: &serde_json::Value,
    ) -> StoreResult<()>;
    /// Deletes all but the newest `keep` events of each tenant; returns how many went.
    async fn trim_events(&self, keep: u32) -> StoreResult<u64>;
}

/// Appends an event in the caller's transaction, so it exists exactly when the change
/// it reports does.
pub(crate) async fn append_event(
    tx: &mut Tx,
    tenant: Uuid,
    kind: &str,
    data: &serde_json::Value,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sql("INSERT INTO api_events (tenant_id, kind, data, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant)
        .bind(kind)
        .bind(Json(data))
        .bind(at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[async_trait]
impl EventStore for SqlStore {
    async fn events_after(
        &self,
        tenant: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<ApiEvent>> {
        let rows = sql("SELECT seq, kind, data, created_at FROM api_events \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
        .bind(tenant)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApiEvent {
                    seq: row.try_get("seq")?,
                    kind: row.try_get("kind")?,
                    data: row.try_get::<Json<serde_json::Value>>("data")?.0,
                    at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn last_event(&self, tenant: Uuid) -> StoreResult<i64> {
        Ok(
            sql("SELECT COALESCE(MAX(seq), 0) FROM api_events WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_scalar(&self.pool)
                .await?,
        )
    }

    async fn record_event(
        &self,
        tenant: Uuid,
        kind: &str,
        data: &serde_json::Value,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        append_event(&mut tx, tenant, kind, data, super::now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn trim_events(&self, keep: u32) -> StoreResult<u64> {
        sql("DELETE FROM api_events WHERE seq IN (SELECT seq FROM (SELECT seq, \
             row_number() OVER (PARTITION BY tenant_id ORDER BY seq DESC) AS n FROM api_events) AS r \
             WHERE r.n > $1)")
        .bind(i64::from(keep))
        .write(&self.pool)
        .await
    }
}
