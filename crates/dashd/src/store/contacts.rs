//! Contacts with every identifier they are known by (phone, BSUID, LID, username),
//! merged as providers reveal them.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lru::LruCache;
use uuid::Uuid;

use super::sql::{Row, sql};
use super::{SqlStore, StoreResult};

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

/// Contacts as last read, so that the message path (the sender of each webhook, the
/// recipient of each send) does not read a known contact for every message. Only on
/// SQLite, whose file one dashd holds, so every write to a contact goes through this
/// store: each write moves the epoch on and empties the cache, and a read that began
/// before a write is not cached (it may hold what the write changed). With PostgreSQL
/// other dashd may write contacts, and every lookup reads. The least recently used
/// entries beyond [`ContactCache::CAPACITY`] are dropped.
#[derive(Debug)]
pub(crate) struct ContactCache {
    entries: Option<Mutex<CachedContacts>>,
}

#[derive(Debug)]
struct CachedContacts {
    /// Raised by every write to a contact.
    epoch: u64,
    /// (bot, phone, BSUID, LID) → the contacts holding any of them.
    by_ids: LruCache<IdsKey, Vec<ContactIdentity>>,
    /// (bot, contact key) → the contact.
    by_key: LruCache<(Uuid, String), Option<ContactIdentity>>,
}

/// A sender's identifiers as a lookup names them: (bot, phone, BSUID, LID).
type IdsKey = (Uuid, Option<String>, Option<String>, Option<String>);

impl ContactCache {
    /// Entries kept per lookup kind, at most.
    const CAPACITY: usize = 1024;

    pub(crate) fn new(enabled: bool) -> Self {
        let capacity = NonZeroUsize::new(Self::CAPACITY).filter(|_| enabled);
        Self {
            entries: capacity.map(|capacity| {
                Mutex::new(CachedContacts {
                    epoch: 0,
                    by_ids: LruCache::new(capacity),
                    by_key: LruCache::new(capacity),
                })
            }),
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, CachedContacts>> {
        // Consistent even if a holder panicked (no await inside).
        self.entries
            .as_ref()
            .map(|entries| entries.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The epoch a read starts at (`None`: no cache).
    fn epoch(&self) -> Option<u64> {
        self.lock().map(|cached| cached.epoch)
    }

    /// After a write to contacts (committed or not).
    fn written(&self) {
        if let Some(mut cached) = self.lock() {
            cached.epoch += 1;
            cached.by_ids.clear();
            cached.by_key.clear();
        }
    }

    fn by_ids(&self, key: &IdsKey) -> Option<Vec<ContactIdentity>> {
        self.lock()?.by_ids.get(key).cloned()
    }

    fn keep_by_ids(&self, since: Option<u64>, key: IdsKey, found: &[ContactIdentity]) {
        if let Some(mut cached) = self.lock()
            && Some(cached.epoch) == since
        {
            cached.by_ids.put(key, found.to_vec());
        }
    }

    fn by_key(&self, key: &(Uuid, String)) -> Option<Option<ContactIdentity>> {
        self.lock()?.by_key.get(key).cloned()
    }

    fn keep_by_key(
        &self,
        since: Option<u64>,
        key: (Uuid, String),
        found: &Option<ContactIdentity>,
    ) {
        if let Some(mut cached) = self.lock()
            && Some(cached.epoch) == since
        {
            cached.by_key.put(key, found.clone());
        }
    }
}

/// Storage of contacts.
#[async_trait]
pub trait ContactStore: Send + Sync {
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
}

fn contact_from_row(row: &Row) -> StoreResult<ContactIdentity> {
    Ok(ContactIdentity {
        contact: row.try_get("contact")?,
        phone: row.try_get("phone")?,
        bsuid: row.try_get("bsuid")?,
        parent_bsuid: row.try_get("parent_bsuid")?,
        lid: row.try_get("lid")?,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
    })
}

/// The contacts holding any of a sender's identifiers, oldest first: one indexed
/// lookup per identifier (with `OR`, SQLite reads every contact of the bot).
const FIND: &str = "SELECT contact, phone, bsuid, parent_bsuid, lid, username, name, created_at \
     FROM contacts WHERE bot_id = $1 AND phone = $2 \
     UNION SELECT contact, phone, bsuid, parent_bsuid, lid, username, name, created_at \
     FROM contacts WHERE bot_id = $1 AND bsuid = $3 \
     UNION SELECT contact, phone, bsuid, parent_bsuid, lid, username, name, created_at \
     FROM contacts WHERE bot_id = $1 AND lid = $4 ORDER BY created_at, contact";

/// The columns of a contact.
macro_rules! contact_columns {
    () => {
        "contact, phone, bsuid, parent_bsuid, lid, username, name"
    };
}

#[async_trait]
impl ContactStore for SqlStore {
    async fn resolve_contact(
        &self,
        bot_id: Uuid,
        ids: &ContactIdentity,
        now: DateTime<Utc>,
    ) -> StoreResult<String> {
        // The usual case, a known customer writing again with nothing new, is
        // answered from a read (or the cache): no write transaction.
        let key: IdsKey = (
            bot_id,
            ids.phone.clone(),
            ids.bsuid.clone(),
            ids.lid.clone(),
        );
        let known = match self.contacts.by_ids(&key) {
            Some(known) => known,
            None => {
                let since = self.contacts.epoch();
                let known: Vec<ContactIdentity> = sql(FIND)
                    .bind(bot_id)
                    .bind(&ids.phone)
                    .bind(&ids.bsuid)
                    .bind(&ids.lid)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(contact_from_row)
                    .collect::<StoreResult<_>>()?;
                self.contacts.keep_by_ids(since, key, &known);
                known
            }
        };
        if adds_nothing(&known, ids) {
            return Ok(known[0].contact.clone());
        }
        let written = self.resolve_in_transaction(bot_id, ids, now).await;
        self.contacts.written();
        written
    }

    async fn contact_by_key(
        &self,
        bot_id: Uuid,
        key: &str,
    ) -> StoreResult<Option<ContactIdentity>> {
        let cache_key = (bot_id, key.to_owned());
        if let Some(found) = self.contacts.by_key(&cache_key) {
            return Ok(found);
        }
        let since = self.contacts.epoch();
        let row = sql(concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE bot_id = $1 AND contact = $2"
        ))
        .bind(bot_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let found = row.as_ref().map(contact_from_row).transpose()?;
        self.contacts.keep_by_key(since, cache_key, &found);
        Ok(found)
    }
    async fn find_contact(
        &self,
        bot_id: Uuid,
        any_id: &str,
    ) -> StoreResult<Option<ContactIdentity>> {
        let row = sql(concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE bot_id = $1 \
             AND (contact = $2 OR phone = $2 OR bsuid = $2 OR lid = $2 OR username = $2) \
             ORDER BY CASE WHEN phone = $2 OR bsuid = $2 OR lid = $2 OR username = $2 THEN 0 ELSE 1 END, created_at LIMIT 1"
        ))
            .bind(bot_id)
            .bind(any_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(contact_from_row).transpose()
    }

    async fn change_bsuid(
        &self,
        bot_id: Uuid,
        old: &str,
        new: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = self
            .change_bsuid_in_transaction(bot_id, old, new, now)
            .await;
        self.contacts.written();
        changed
    }
}

impl SqlStore {
    async fn change_bsuid_in_transaction(
        &self,
        bot_id: Uuid,
        old: &str,
        new: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        // A contact already created under the new id gives it up first.
        sql("UPDATE contacts SET bsuid = NULL, updated_at = $3 WHERE bot_id = $1 AND bsuid = $2")
            .bind(bot_id)
            .bind(new)
            .bind(now)
            .execute(&mut tx)
            .await?;
        let changed =
            sql("UPDATE contacts SET bsuid = $3, updated_at = $4 WHERE bot_id = $1 AND bsuid = $2")
                .bind(bot_id)
                .bind(old)
                .bind(new)
                .bind(now)
                .execute(&mut tx)
                .await?
                > 0;
        tx.commit().await?;
        Ok(changed)
    }

    /// The write half of [`ContactStore::resolve_contact`]: creates, completes or merges
    /// contacts in one transaction.
    async fn resolve_in_transaction(
        &self,
        bot_id: Uuid,
        ids: &ContactIdentity,
        now: DateTime<Utc>,
    ) -> StoreResult<String> {
        let mut tx = self.write().await?;
        let found = sql(FIND)
            .bind(bot_id)
            .bind(&ids.phone)
            .bind(&ids.bsuid)
            .bind(&ids.lid)
            .fetch_all(&mut tx)
            .await?;
        let found: Vec<ContactIdentity> = found
            .iter()
            .map(contact_from_row)
            .collect::<StoreResult<_>>()?;
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
            let taken = sql("SELECT 1 AS taken FROM contacts WHERE bot_id = $1 AND contact = $2")
                .bind(bot_id)
                .bind(&key)
                .fetch_optional(&mut tx)
                .await?
                .is_some();
            if taken {
                key = format!("{key}~{}", &Uuid::now_v7().simple().to_string()[20..]);
            }
            sql(
                "INSERT INTO contacts (bot_id, contact, phone, bsuid, parent_bsuid, lid, username, name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (bot_id, contact) DO NOTHING",
            )
            .bind(bot_id)
            .bind(&key)
            .bind(&ids.phone)
            .bind(&ids.bsuid)
            .bind(&ids.parent_bsuid)
            .bind(&ids.lid)
            .bind(&ids.username)
            .bind(&ids.name)
            .bind(now)
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
            return Ok(key);
        };
        // Identifiers held by the other contacts move to the one kept.
        for other in &found[1..] {
            sql(
                "UPDATE contacts SET phone = CASE WHEN phone = $3 THEN NULL ELSE phone END, \
                 bsuid = CASE WHEN bsuid = $4 THEN NULL ELSE bsuid END, \
                 lid = CASE WHEN lid = $5 THEN NULL ELSE lid END, updated_at = $6 \
                 WHERE bot_id = $1 AND contact = $2",
            )
            .bind(bot_id)
            .bind(&other.contact)
            .bind(&ids.phone)
            .bind(&ids.bsuid)
            .bind(&ids.lid)
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        if adds_nothing(&found, ids) {
            tx.commit().await?;
            return Ok(keep.contact.clone());
        }
        sql(
            "UPDATE contacts SET phone = COALESCE($3, phone), bsuid = COALESCE($4, bsuid), \
             parent_bsuid = COALESCE($5, parent_bsuid), lid = COALESCE($6, lid), \
             username = COALESCE($7, username), name = COALESCE($8, name), updated_at = $9 \
             WHERE bot_id = $1 AND contact = $2",
        )
        .bind(bot_id)
        .bind(&keep.contact)
        .bind(&ids.phone)
        .bind(&ids.bsuid)
        .bind(&ids.parent_bsuid)
        .bind(&ids.lid)
        .bind(&ids.username)
        .bind(&ids.name)
        .bind(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(keep.contact.clone())
    }
}
