//! DashOffice's shared contract: domain types, validation rules, the configuration schema
//! and the admin-API messages that `dashd` and `dashctl` exchange.
//!
//! This crate does no I/O (no tokio, no sqlx, no sockets): everything here is a pure
//! function or a plain type, so both binaries agree on it and it is cheap to test.

pub mod access;
pub mod api;
pub mod bot;
pub mod breaker;
pub mod commerce;
pub mod config;
pub mod flow;
pub mod provider;
pub mod ratelimit;
pub mod tenant;
pub mod validate;

pub use bot::{Bot, BotRef, BotStatus};
pub use tenant::{Tenant, TenantStatus};
pub use validate::ValidationError;

/// The release version shared by `dashd` and `dashctl` (from the workspace manifest).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
