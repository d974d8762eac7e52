//! Each bot's chain entries with their settings and sealed secrets (this layer never
//! sees plaintext), and the master key's check value.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::{Row, sql};
use super::{SqlStore, StoreError, StoreResult};

/// One chain entry as stored. `secrets` is sealed (see `crate::secrets`); this layer
/// never sees plaintext secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProvider {
    pub bot_id: Uuid,
    pub provider: String,
    pub settings: BTreeMap<String, String>,
    pub secrets: Option<String>,
    /// What routes a shared webhook to this bot (unique per provider).
    pub route_key: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Storage of providers' settings.
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// A bot's chain entries, every provider it has settings for.
    async fn providers_of(&self, bot_id: Uuid) -> StoreResult<Vec<StoredProvider>>;
    /// Every bot's entries (health probes, start-up).
    async fn all_providers(&self) -> StoreResult<Vec<StoredProvider>>;
    /// Writes (inserts or replaces) an entry. A route key another bot holds for the
    /// same provider is a conflict.
    async fn put_provider(&self, entry: &StoredProvider) -> StoreResult<()>;
    /// Removes an entry; false when there was none.
    async fn delete_provider(&self, bot_id: Uuid, provider: &str) -> StoreResult<bool>;
    /// The bot whose entry for `provider` has this route key.
    async fn bot_by_route(&self, provider: &str, route_key: &str) -> StoreResult<Option<Uuid>>;
    /// The value sealed under the master key at first use, if any.
    async fn secret_check(&self) -> StoreResult<Option<String>>;
    /// Stores the check value unless one exists; returns the one stored.
    async fn init_secret_check(&self, sealed: &str, now: DateTime<Utc>) -> StoreResult<String>;
}

fn stored_provider_from_row(row: &Row) -> StoreResult<StoredProvider> {
    Ok(StoredProvider {
        bot_id: row.try_get::<Uuid>("bot_id")?,
        provider: row.try_get("provider")?,
        settings: row.try_get::<Json<BTreeMap<String, String>>>("settings")?.0,
        secrets: row.try_get("secrets")?,
        route_key: row.try_get("route_key")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl ProviderStore for SqlStore {
    async fn providers_of(&self, bot_id: Uuid) -> StoreResult<Vec<StoredProvider>> {
        let rows = sql("SELECT bot_id, provider, settings, secrets, route_key, updated_at FROM bot_providers WHERE bot_id = $1 ORDER BY provider")
            .bind(bot_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_provider_from_row).collect()
    }

    async fn all_providers(&self) -> StoreResult<Vec<StoredProvider>> {
        let rows = sql("SELECT bot_id, provider, settings, secrets, route_key, updated_at FROM bot_providers ORDER BY bot_id, provider")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_provider_from_row).collect()
    }

    async fn put_provider(&self, entry: &StoredProvider) -> StoreResult<()> {
        let mut tx = self.write().await?;
        if let Some(route) = &entry.route_key {
            let taken = sql("SELECT bot_id FROM bot_providers WHERE provider = $1 AND route_key = $2 AND bot_id <> $3")
                .bind(&entry.provider)
                .bind(route)
                .bind(entry.bot_id)
                .fetch_optional(&mut tx)
                .await?;
            if taken.is_some() {
                return Err(StoreError::Conflict {
                    message: format!("another bot already uses {} {route}", entry.provider),
                    field: Some("settings"),
                });
            }
        }
        sql(
            "INSERT INTO bot_providers (bot_id, provider, settings, secrets, route_key, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (bot_id, provider) DO UPDATE SET settings = excluded.settings, secrets = excluded.secrets, \
             route_key = excluded.route_key, updated_at = excluded.updated_at",
        )
        .bind(entry.bot_id)
        .bind(&entry.provider)
        .bind(Json(&entry.settings))
        .bind(&entry.secrets)
        .bind(&entry.route_key)
        .bind(entry.updated_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_provider(&self, bot_id: Uuid, provider: &str) -> StoreResult<bool> {
        let deleted = sql("DELETE FROM bot_providers WHERE bot_id = $1 AND provider = $2")
            .bind(bot_id)
            .bind(provider)
            .write(&self.pool)
            .await?
            > 0;
        Ok(deleted)
    }

    async fn bot_by_route(&self, provider: &str, route_key: &str) -> StoreResult<Option<Uuid>> {
        let row = sql("SELECT bot_id FROM bot_providers WHERE provider = $1 AND route_key = $2")
            .bind(provider)
            .bind(route_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get::<Uuid>("bot_id")).transpose()?)
    }

    async fn secret_check(&self) -> StoreResult<Option<String>> {
        let row = sql("SELECT sealed FROM secret_check WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("sealed")).transpose()?)
    }

    async fn init_secret_check(&self, sealed: &str, now: DateTime<Utc>) -> StoreResult<String> {
        let mut tx = self.write().await?;
        sql("INSERT INTO secret_check (id, sealed, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(sealed)
            .bind(now)
            .execute(&mut tx)
            .await?;
        let stored: String = sql("SELECT sealed FROM secret_check WHERE id = 1")
            .fetch_one(&mut tx)
            .await?
            .try_get("sealed")?;
        tx.commit().await?;
        Ok(stored)
    }
}
