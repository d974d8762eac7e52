//! Storage of the providers: each bot's chain entries with their settings and sealed
//! secrets, the master key's check value, contacts with every identifier they are known
//! by, and the record of send attempts.
//!
//! As in [`super::pipeline`], the SQL is written once for both backends;
//! [`provider_store!`] instantiates it with the backend's id binding.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

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

/// Every identifier a contact is known by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactIdentity {
    /// The key conversations and messages use for this contact.
    pub contact: String,
    pub phone: Option<String>,
    pub bsuid: Option<String>,
    pub parent_bsuid: Option<String>,
    pub lid: Option<String>,
    pub username: Option<String>,
    pub name: Option<String>,
}

/// Whether these identifiers add nothing to the one contact found by them (none found,
/// or two to merge, is something to write).
pub(crate) fn adds_nothing(found: &[ContactIdentity], ids: &ContactIdentity) -> bool {
    let [known] = found else {
        return false;
    };
    let adds = |new: &Option<String>, old: &Option<String>| new.is_some() && new != old;
    !(adds(&ids.phone, &known.phone)
        || adds(&ids.bsuid, &known.bsuid)
        || adds(&ids.parent_bsuid, &known.parent_bsuid)
        || adds(&ids.lid, &known.lid)
        || adds(&ids.username, &known.username)
        || adds(&ids.name, &known.name))
}

/// One try at sending an outbox entry through one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAttempt {
    pub provider: String,
    /// `sent`, `retryable`, `permanent`, `provider_broken` or `skipped` (breaker open).
    pub outcome: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// Storage the adapter needs.
#[async_trait]
pub trait ProviderStore {
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

    /// The contact these identifiers belong to, created or completed as needed: a
    /// contact found by any identifier gains the others; when identifiers name two
    /// contacts, the oldest keeps them all (the other's history stays under its key).
    /// Returns the contact key.
    async fn resolve_contact(
        &self,
        bot_id: Uuid,
        ids: &ContactIdentity,
        now: DateTime<Utc>,
    ) -> StoreResult<String>;
    /// A contact's identifiers by its key (what conversations and messages use).
    async fn contact_by_key(&self, bot_id: Uuid, key: &str)
    -> StoreResult<Option<ContactIdentity>>;
    /// A contact's identifiers, by any of its identifiers or else by its key (a phone a
    /// contact holds wins over a key that is the same text).
    async fn find_contact(
        &self,
        bot_id: Uuid,
        any_id: &str,
    ) -> StoreResult<Option<ContactIdentity>>;
    /// The Cloud API issued a new BSUID: the contact holding `old` holds `new`.
    async fn change_bsuid(
        &self,
        bot_id: Uuid,
        old: &str,
        new: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Records one send attempt of an outbox entry.
    async fn record_attempt(&self, message_id: Uuid, attempt: &SendAttempt) -> StoreResult<()>;
    /// A successful send: its attempt recorded and the entry `owner` holds marked `sent`
    /// (with `provider_message_id`), in one transaction. False (the attempt still
    /// recorded) when the entry is not ours any more.
    async fn mark_sent_after(
        &self,
        id: Uuid,
        owner: &str,
        provider_message_id: &str,
        attempt: &SendAttempt,
    ) -> StoreResult<bool>;
    /// An entry's attempts, oldest first.
    async fn attempts(&self, message_id: Uuid) -> StoreResult<Vec<SendAttempt>>;
    /// An entry `owner` holds was refused for good by a provider (bad recipient, outside
    /// the 24-hour window): `failed`, never retried, with the provider's reason. False
    /// when the entry is not ours any more.
    async fn mark_refused(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Gives back an entry `owner` holds without sending it and without counting an
    /// attempt (every provider's breaker was open): `pending`, due at `at_ms`.
    async fn release(&self, id: Uuid, owner: &str, at_ms: i64) -> StoreResult<bool>;
    /// A message the business sent from its own phone (or an echo of one dashd sent):
    /// kept in the conversation's log as sent, never answered, never sent again. False
    /// when a message with that provider id is already there.
    async fn log_from_me(&self, message: &crate::store::pipeline::NewInbound) -> StoreResult<bool>;
    /// A delivery failure reported after the send (`sent`/`delivered` → `failed`, with
    /// the provider's code and reason; never retried: the provider gave up on it).
    async fn status_failed(
        &self,
        bot_id: Uuid,
        provider: &str,
        provider_message_id: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

/// Implements [`ProviderStore`] for a backend, as `pipeline_store!` does (and in the
/// same module, whose `add_event` it uses for the status history).
macro_rules! provider_store {
    ($store:ty, $id:expr, $get_id:path) => {
        fn stored_provider_from_row(
            row: &<<$store as $crate::store::pipeline::Backend>::Db as sqlx::Database>::Row,
        ) -> StoreResult<$crate::store::providers::StoredProvider> {
            use sqlx::Row;
            Ok($crate::store::providers::StoredProvider {
                bot_id: $get_id(row, "bot_id")?,
                provider: row.try_get("provider")?,
                settings: row
                    .try_get::<sqlx::types::Json<std::collections::BTreeMap<String, String>>, _>("settings")?
                    .0,
                secrets: row.try_get("secrets")?,
                route_key: row.try_get("route_key")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        /// One send attempt, in the caller's transaction.
        async fn insert_attempt(
            conn: &mut <<$store as $crate::store::pipeline::Backend>::Db as sqlx::Database>::Connection,
            message_id: uuid::Uuid,
            attempt: &$crate::store::providers::SendAttempt,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO send_attempts (message_id, provider, outcome, error_code, error, latency_ms, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(($id)(message_id))
            .bind(&attempt.provider)
            .bind(&attempt.outcome)
            .bind(&attempt.error_code)
            .bind(&attempt.error)
            .bind(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))
            .bind(attempt.at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        fn contact_from_row(
            row: &<<$store as $crate::store::pipeline::Backend>::Db as sqlx::Database>::Row,
        ) -> StoreResult<$crate::store::providers::ContactIdentity> {
            use sqlx::Row;
            Ok($crate::store::providers::ContactIdentity {
                contact: row.try_get("contact")?,
                phone: row.try_get("phone")?,
                bsuid: row.try_get("bsuid")?,
                parent_bsuid: row.try_get("parent_bsuid")?,
                lid: row.try_get("lid")?,
                username: row.try_get("username")?,
                name: row.try_get("name")?,
            })
        }

        const CONTACT_COLUMNS: &str = "contact, phone, bsuid, parent_bsuid, lid, username, name";

        #[async_trait::async_trait]
        impl $crate::store::providers::ProviderStore for $store {
            async fn providers_of(&self, bot_id: uuid::Uuid) -> StoreResult<Vec<$crate::store::providers::StoredProvider>> {
                let rows = sqlx::query("SELECT bot_id, provider, settings, secrets, route_key, updated_at FROM bot_providers WHERE bot_id = $1 ORDER BY provider")
                    .bind(($id)(bot_id))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(stored_provider_from_row).collect()
            }

            async fn all_providers(&self) -> StoreResult<Vec<$crate::store::providers::StoredProvider>> {
                let rows = sqlx::query("SELECT bot_id, provider, settings, secrets, route_key, updated_at FROM bot_providers ORDER BY bot_id, provider")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(stored_provider_from_row).collect()
            }

            async fn put_provider(&self, entry: &$crate::store::providers::StoredProvider) -> StoreResult<()> {
                let mut tx = self.write().await?;
                if let Some(route) = &entry.route_key {
                    let taken = sqlx::query("SELECT bot_id FROM bot_providers WHERE provider = $1 AND route_key = $2 AND bot_id <> $3")
                        .bind(&entry.provider)
                        .bind(route)
                        .bind(($id)(entry.bot_id))
                        .fetch_optional(&mut *tx)
                        .await?;
                    if taken.is_some() {
                        return Err($crate::store::StoreError::Conflict {
                            message: format!("another bot already uses {} {route}", entry.provider),
                            field: Some("settings"),
                        });
                    }
                }
                sqlx::query(
                    "INSERT INTO bot_providers (bot_id, provider, settings, secrets, route_key, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (bot_id, provider) DO UPDATE SET settings = excluded.settings, secrets = excluded.secrets, \
                     route_key = excluded.route_key, updated_at = excluded.updated_at",
                )
                .bind(($id)(entry.bot_id))
                .bind(&entry.provider)
                .bind(sqlx::types::Json(&entry.settings))
                .bind(&entry.secrets)
                .bind(&entry.route_key)
                .bind(entry.updated_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_provider(&self, bot_id: uuid::Uuid, provider: &str) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let deleted = sqlx::query("DELETE FROM bot_providers WHERE bot_id = $1 AND provider = $2")
                    .bind(($id)(bot_id))
                    .bind(provider)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(deleted)
            }

            async fn bot_by_route(&self, provider: &str, route_key: &str) -> StoreResult<Option<uuid::Uuid>> {
                let row = sqlx::query("SELECT bot_id FROM bot_providers WHERE provider = $1 AND route_key = $2")
                    .bind(provider)
                    .bind(route_key)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| $get_id(&row, "bot_id")).transpose()
            }

            async fn secret_check(&self) -> StoreResult<Option<String>> {
                use sqlx::Row;
                let row = sqlx::query("SELECT sealed FROM secret_check WHERE id = 1")
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|row| row.try_get("sealed")).transpose()?)
            }

            async fn init_secret_check(&self, sealed: &str, now: chrono::DateTime<chrono::Utc>) -> StoreResult<String> {
                use sqlx::Row;
                let mut tx = self.write().await?;
                sqlx::query("INSERT INTO secret_check (id, sealed, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
                    .bind(sealed)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let stored: String = sqlx::query("SELECT sealed FROM secret_check WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("sealed")?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn resolve_contact(
                &self,
                bot_id: uuid::Uuid,
                ids: &$crate::store::providers::ContactIdentity,
                now: chrono::DateTime<chrono::Utc>,
            ) -> StoreResult<String> {
                const FIND: &str = "SELECT contact, phone, bsuid, parent_bsuid, lid, username, name FROM contacts \
                     WHERE bot_id = $1 AND (phone = $2 OR bsuid = $3 OR lid = $4) ORDER BY created_at, contact";
                // The usual case, a known customer writing again with nothing new, is
                // answered from a read: no write transaction.
                let known = sqlx::query(FIND)
                    .bind(($id)(bot_id))
                    .bind(&ids.phone)
                    .bind(&ids.bsuid)
                    .bind(&ids.lid)
                    .fetch_all(&self.pool)
                    .await?;
                let known: Vec<$crate::store::providers::ContactIdentity> =
                    known.iter().map(contact_from_row).collect::<StoreResult<_>>()?;
                if $crate::store::providers::adds_nothing(&known, ids) {
                    return Ok(known[0].contact.clone());
                }
                let mut tx = self.write().await?;
                let found = sqlx::query(FIND)
                .bind(($id)(bot_id))
                .bind(&ids.phone)
                .bind(&ids.bsuid)
                .bind(&ids.lid)
                .fetch_all(&mut *tx)
                .await?;
                let found: Vec<$crate::store::providers::ContactIdentity> =
                    found.iter().map(contact_from_row).collect::<StoreResult<_>>()?;
                let Some(keep) = found.first() else {
                    let mut key = ids
                        .phone
                        .clone()
                        .or_else(|| ids.bsuid.clone())
                        .or_else(|| ids.lid.clone())
                        .unwrap_or_else(|| ids.contact.clone());
                    // A contact that gave this identifier up (a number that changed hands)
                    // still holds the key: the newcomer gets a key of its own, never the
                    // other person's conversation.
                    let taken = sqlx::query("SELECT 1 AS taken FROM contacts WHERE bot_id = $1 AND contact = $2")
                        .bind(($id)(bot_id))
                        .bind(&key)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    if taken {
                        key = format!("{key}~{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
                    }
                    sqlx::query(
                        "INSERT INTO contacts (bot_id, contact, phone, bsuid, parent_bsuid, lid, username, name, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (bot_id, contact) DO NOTHING",
                    )
                    .bind(($id)(bot_id))
                    .bind(&key)
                    .bind(&ids.phone)
                    .bind(&ids.bsuid)
                    .bind(&ids.parent_bsuid)
                    .bind(&ids.lid)
                    .bind(&ids.username)
                    .bind(&ids.name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok(key);
                };
                // Identifiers held by the other contacts move to the one kept.
                for other in &found[1..] {
                    sqlx::query(
                        "UPDATE contacts SET phone = CASE WHEN phone = $3 THEN NULL ELSE phone END, \
                         bsuid = CASE WHEN bsuid = $4 THEN NULL ELSE bsuid END, \
                         lid = CASE WHEN lid = $5 THEN NULL ELSE lid END, updated_at = $6 \
                         WHERE bot_id = $1 AND contact = $2",
                    )
                    .bind(($id)(bot_id))
                    .bind(&other.contact)
                    .bind(&ids.phone)
                    .bind(&ids.bsuid)
                    .bind(&ids.lid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                if $crate::store::providers::adds_nothing(&found, ids) {
                    tx.commit().await?;
                    return Ok(keep.contact.clone());
                }
                sqlx::query(
                    "UPDATE contacts SET phone = COALESCE($3, phone), bsuid = COALESCE($4, bsuid), \
                     parent_bsuid = COALESCE($5, parent_bsuid), lid = COALESCE($6, lid), \
                     username = COALESCE($7, username), name = COALESCE($8, name), updated_at = $9 \
                     WHERE bot_id = $1 AND contact = $2",
                )
                .bind(($id)(bot_id))
                .bind(&keep.contact)
                .bind(&ids.phone)
                .bind(&ids.bsuid)
                .bind(&ids.parent_bsuid)
                .bind(&ids.lid)
                .bind(&ids.username)
                .bind(&ids.name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(keep.contact.clone())
            }

            async fn find_contact(&self, bot_id: uuid::Uuid, any_id: &str) -> StoreResult<Option<$crate::store::providers::ContactIdentity>> {
                let sql = format!(
                    "SELECT {CONTACT_COLUMNS} FROM contacts WHERE bot_id = $1 \
                     AND (contact = $2 OR phone = $2 OR bsuid = $2 OR lid = $2 OR username = $2) \
                     ORDER BY CASE WHEN phone = $2 OR bsuid = $2 OR lid = $2 OR username = $2 THEN 0 ELSE 1 END, created_at LIMIT 1"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(($id)(bot_id))
                    .bind(any_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(contact_from_row).transpose()
            }

            async fn contact_by_key(&self, bot_id: uuid::Uuid, key: &str) -> StoreResult<Option<$crate::store::providers::ContactIdentity>> {
                let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE bot_id = $1 AND contact = $2");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(($id)(bot_id))
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(contact_from_row).transpose()
            }

            async fn change_bsuid(&self, bot_id: uuid::Uuid, old: &str, new: &str, now: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                // A contact already created under the new id gives it up first.
                sqlx::query("UPDATE contacts SET bsuid = NULL, updated_at = $3 WHERE bot_id = $1 AND bsuid = $2")
                    .bind(($id)(bot_id))
                    .bind(new)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let changed = sqlx::query("UPDATE contacts SET bsuid = $3, updated_at = $4 WHERE bot_id = $1 AND bsuid = $2")
                    .bind(($id)(bot_id))
                    .bind(old)
                    .bind(new)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(changed)
            }

            async fn record_attempt(&self, message_id: uuid::Uuid, attempt: &$crate::store::providers::SendAttempt) -> StoreResult<()> {
                let mut tx = self.write().await?;
                insert_attempt(&mut *tx, message_id, attempt).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn mark_sent_after(
                &self,
                id: uuid::Uuid,
                owner: &str,
                provider_message_id: &str,
                attempt: &$crate::store::providers::SendAttempt,
            ) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                insert_attempt(&mut *tx, id, attempt).await?;
                let changed = set_sent(&mut *tx, id, owner, &attempt.provider, provider_message_id, attempt.at).await?;
                tx.commit().await?;
                Ok(changed)
            }

            async fn attempts(&self, message_id: uuid::Uuid) -> StoreResult<Vec<$crate::store::providers::SendAttempt>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT provider, outcome, error_code, error, latency_ms, at FROM send_attempts WHERE message_id = $1 ORDER BY seq")
                    .bind(($id)(message_id))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::store::providers::SendAttempt {
                            provider: row.try_get("provider")?,
                            outcome: row.try_get("outcome")?,
                            error_code: row.try_get("error_code")?,
                            error: row.try_get("error")?,
                            latency_ms: u64::try_from(row.try_get::<i64, _>("latency_ms")?).unwrap_or(0),
                            at: row.try_get("at")?,
                        })
                    })
                    .collect()
            }

            async fn release(&self, id: uuid::Uuid, owner: &str, at_ms: i64) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let changed = sqlx::query(
                    "UPDATE messages SET state = 'pending', next_attempt_ms = $3, lease_owner = NULL, lease_until_ms = NULL \
                     WHERE id = $1 AND state = 'processing' AND lease_owner = $2",
                )
                .bind(($id)(id))
                .bind(owner)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(changed)
            }

            async fn log_from_me(&self, m: &$crate::store::pipeline::NewInbound) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let known = sqlx::query("SELECT id FROM messages WHERE provider = $1 AND provider_message_id = $2 AND direction = 'out' AND bot_id = $3")
                    .bind(&m.provider)
                    .bind(&m.provider_message_id)
                    .bind(($id)(m.bot_id))
                    .fetch_optional(&mut *tx)
                    .await?;
                if known.is_some() {
                    tx.commit().await?;
                    return Ok(false);
                }
                let id = uuid::Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO messages (id, bot_id, tenant_id, contact, direction, body, state, provider, provider_message_id, created_at, updated_at, sent_at) \
                     VALUES ($1, $2, $3, $4, 'out', $5, 'sent', $6, $7, $8, $8, $8)",
                )
                .bind(($id)(id))
                .bind(($id)(m.bot_id))
                .bind(($id)(m.tenant_id))
                .bind(&m.contact)
                .bind(sqlx::types::Json(&m.body))
                .bind(&m.provider)
                .bind(&m.provider_message_id)
                .bind(m.received_at)
                .execute(&mut *tx)
                .await?;
                add_event(&mut *tx, id, "sent", Some("sent from the business phone"), m.received_at).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn mark_refused(&self, id: uuid::Uuid, owner: &str, error: &str, now: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let changed = sqlx::query(
                    "UPDATE messages SET state = 'failed', attempts = attempts + 1, next_attempt_ms = NULL, last_error = $2, \
                     updated_at = $3, lease_owner = NULL, lease_until_ms = NULL \
                     WHERE id = $1 AND state = 'processing' AND lease_owner = $4",
                )
                .bind(($id)(id))
                .bind(error)
                .bind(now)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if changed {
                    add_event(&mut *tx, id, "failed", Some(error), now).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn status_failed(
                &self,
                bot_id: uuid::Uuid,
                provider: &str,
                provider_message_id: &str,
                error: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let updated = sqlx::query(
                    "UPDATE messages SET state = 'failed', next_attempt_ms = NULL, last_error = $4, updated_at = $5 \
                     WHERE provider = $2 AND provider_message_id = $3 AND direction = 'out' AND bot_id = $1 \
                       AND state IN ('sent', 'delivered') RETURNING id",
                )
                .bind(($id)(bot_id))
                .bind(provider)
                .bind(provider_message_id)
                .bind(error)
                .bind(at)
                .fetch_optional(&mut *tx)
                .await?;
                let changed = match updated {
                    Some(row) => {
                        add_event(&mut *tx, $get_id(&row, "id")?, "failed", Some(error), at).await?;
                        true
                    }
                    None => false,
                };
                tx.commit().await?;
                Ok(changed)
            }
        }
    };
}

pub(crate) use provider_store;
