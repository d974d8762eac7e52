//! Tenants: the businesses that own bots. A tenant is addressed by its slug everywhere
//! a human types it, and by its UUID in storage and integrations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A business using DashOffice. Every bot, contact and message belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: Uuid,
    /// Unique, `[a-z0-9-]{2,40}`; see [`crate::validate::slug`].
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    /// REST API requests a minute for this tenant; absent: the server's `api.rate_per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_rate_per_minute: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Whether a tenant's bots may run. Suspending keeps every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    /// Every status, in the order shown in help text.
    pub const ALL: [TenantStatus; 2] = [TenantStatus::Active, TenantStatus::Suspended];

    /// The stored and displayed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TenantStatus {
    type Err = crate::ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                crate::ValidationError::new(
                    "status",
                    format!("{s:?} is not a tenant status: use active or suspended"),
                )
            })
    }
}
