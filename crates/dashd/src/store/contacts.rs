//! Contacts with every identifier they are known by (phone, BSUID, LID, username),
//! merged as providers reveal them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
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
        // One indexed lookup per identifier: with `OR`, SQLite reads every contact of
        // the bot.
        const FIND: &str = "SELECT contact, phone, bsuid, parent_bsuid, lid, username, name, created_at \
             FROM contacts WHERE bot_id = $1 AND phone = $2 \
             UNION SELECT contact, phone, bsuid, parent_bsuid, lid, username, name, created_at \
             FROM contacts WHERE bot_id = $1 AND bsuid = $3 \
             UNION SELECT contact, phone, bsuid, parent_bsuid, lid, username, name, created_at \
             FROM contacts WHERE bot_id = $1 AND lid = $4 ORDER BY created_at, contact";
        // The usual case, a known customer writing again with nothing new, is
        // answered from a read: no write transaction.
        let known = sql(FIND)
            .bind(bot_id)
            .bind(&ids.phone)
            .bind(&ids.bsuid)
            .bind(&ids.lid)
            .fetch_all(&self.pool)
            .await?;
        let known: Vec<ContactIdentity> = known
            .iter()
            .map(contact_from_row)
            .collect::<StoreResult<_>>()?;
        if adds_nothing(&known, ids) {
            return Ok(known[0].contact.clone());
        }
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

    async fn contact_by_key(
        &self,
        bot_id: Uuid,
        key: &str,
    ) -> StoreResult<Option<ContactIdentity>> {
        let row = sql(concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE bot_id = $1 AND contact = $2"
        ))
        .bind(bot_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(contact_from_row).transpose()
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
}
