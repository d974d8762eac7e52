//! The command line, declared with clap; doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dash_core::access::{Role, Scope, UserStatus};
use dash_core::{BotRef, BotStatus, TenantStatus};

/// Drive the DashOffice daemon (dashd): tenants, bots and their WhatsApp flows.
///
/// dashctl talks to dashd over its admin socket. Without --socket or DASHCTL_SOCKET it
/// tries ./dashd-data/dashd.sock (dashd started in this directory), then
/// /run/dashd/admin.sock (dashd under systemd).
///
/// Exit codes: 0 success, 1 failure inside dashd, 2 invalid input or usage,
/// 3 dashd unreachable, 4 not found, 5 conflict (already exists, still in use),
/// 6 permission denied.
#[derive(Debug, Parser)]
#[command(name = "dashctl", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// Path of dashd's admin socket [env: DASHCTL_SOCKET].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Output format: human-readable tables, or JSON for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Assume "yes" for confirmations (required for destructive commands when stdin is not
    /// a terminal).
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// Print each request to dashd and its timing on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show dashd's version, uptime, storage and record counts.
    Status,
    /// Manage tenants (the businesses that own bots).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage bots (one WhatsApp number each), addressed as TENANT/BOT or by id.
    #[command(subcommand)]
    Bot(BotCommand),
    /// Manage the people who log in to the REST API: platform admins, and each tenant's
    /// owners, agents and viewers.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage tenants' API keys for integrations (shown once, stored as a hash).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage a bot's conversational flows: validate, import, list, show, export, activate.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// A bot's provider chain: the providers it sends through, in order, and when a
    /// failing one is skipped for the next.
    #[command(subcommand)]
    Chain(ChainCommand),
    /// A bot's provider settings and secrets, their health, and a probe on demand.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Pair phones and watch the WhatsApp Web sessions of the bridge providers (baileys,
    /// venom, wwebjs) and Evolution instances.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Talk to a bot as a customer would, through the sandbox provider: interactively,
    /// or with --send for scripts.
    Chat {
        /// TENANT/BOT or the bot's id (its chain must include sandbox).
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The customer's number.
        #[arg(long = "as", value_name = "+PHONE", default_value = "+15550000001")]
        phone: String,
        /// The customer's name, as WhatsApp would report it.
        #[arg(long)]
        name: Option<String>,
        /// Send this message, print the bot's replies and exit (repeatable: one after the
        /// other, each waiting for the replies to the one before).
        #[arg(long, value_name = "TEXT")]
        send: Vec<String>,
        /// Longest wait for the replies to one message, in seconds.
        #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
        wait: f64,
    },
    /// Send a text message to a contact through the bot's provider chain.
    Send {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The recipient (E.164).
        #[arg(long, value_name = "+PHONE")]
        to: String,
        /// The message.
        text: String,
    },
    /// Look into the outbox: list, show, retry and cancel outgoing messages.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Conversations of a bot: list, transcript and flow state, resume after a handoff, reset.
    #[command(subcommand, visible_alias = "conv")]
    Conversation(ConversationCommand),
    /// Print a shell completion script, e.g. `dashctl completions bash > /etc/bash_completion.d/dashctl`.
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },
    /// Write man pages (dashctl.1 and one per subcommand) into a directory, e.g.
    /// `dashctl man /usr/local/share/man/man1`.
    Man {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Unique short name: 2-40 characters from a-z, 0-9 and '-'.
        slug: String,
        /// Display name [default: the slug].
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants.
    #[command(visible_alias = "ls")]
    List,
    /// Show one tenant.
    Show {
        /// Slug or id.
        tenant: String,
    },
    /// Change a tenant's name or status.
    Update {
        /// Slug or id.
        tenant: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// active, or suspended to stop its bots (records are kept).
        #[arg(long, value_parser = parse_tenant_status)]
        status: Option<TenantStatus>,
        /// REST API requests a minute for this tenant (0: the server's api.rate_per_minute).
        #[arg(long, value_name = "PER_MINUTE")]
        api_rate: Option<u32>,
    },
    /// Delete a tenant. Refused while it has bots, unless --force (which deletes them).
    #[command(visible_alias = "rm")]
    Delete {
        /// Slug or id.
        tenant: String,
        /// Also delete the tenant's bots.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is asked for twice on a terminal, or read from stdin
    /// with --password-stdin; there is never a default one.
    Create {
        /// The email the user logs in with.
        email: String,
        /// admin (platform-wide, no tenant), owner, agent or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The tenant (slug or id); required for every role but admin.
        #[arg(long)]
        tenant: Option<String>,
        /// Display name [default: the email's local part].
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users, all or one tenant's.
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's users (slug or id).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one user.
    Show {
        /// Email or id.
        user: String,
    },
    /// Change a user's name, role or status (disabling ends its sessions).
    Update {
        /// Email or id.
        user: String,
        #[arg(long)]
        name: Option<String>,
        /// owner, agent or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// active, or disabled to stop its logins.
        #[arg(long, value_parser = parse_user_status)]
        status: Option<UserStatus>,
    },
    /// Set a user's password (ends its sessions).
    Passwd {
        /// Email or id.
        user: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user.
    #[command(visible_alias = "rm")]
    Delete {
        /// Email or id.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key for a tenant; it is printed once and cannot be shown again.
    Create {
        /// The tenant (slug or id).
        tenant: String,
        /// What the key is for, e.g. erp.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. messages:send,orders:read (see docs/api.md).
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// When it stops working: a date (2027-01-31), an RFC 3339 time, or a duration
        /// in days (90d).
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// List API keys (their prefixes, never the keys), all or one tenant's.
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's keys (slug or id).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke an API key: it stops working at once.
    Revoke {
        /// The key's id (from `dashctl key list`).
        id: uuid::Uuid,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    value.parse()
}

fn parse_user_status(value: &str) -> Result<UserStatus, String> {
    value.parse()
}

fn parse_scope(value: &str) -> Result<Scope, String> {
    value.trim().parse()
}

fn parse_expiry(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Some(days) = value.strip_suffix('d')
        && let Ok(days) = days.parse::<i64>()
        && days > 0
    {
        return Ok(chrono::Utc::now() + chrono::Duration::days(days));
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
        .ok_or_else(|| {
            format!("{value:?} is not a date (2027-01-31), a time (RFC 3339) or days (90d)")
        })
}

#[derive(Debug, Subcommand)]
pub enum BotCommand {
    /// Create a bot under a tenant.
    Create {
        /// TENANT/BOT, e.g. acme/sales (the bot name follows the slug rules).
        #[arg(value_parser = parse_bot_path)]
        bot: BotRef,
        #[command(flatten)]
        fields: BotFields,
    },
    /// List bots, all or one tenant's.
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's bots (slug or id).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one bot, its settings included.
    Show {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
    },
    /// Change a bot.
    Update {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// New name within its tenant.
        #[arg(long)]
        name: Option<String>,
        /// Remove the bot's phone number.
        #[arg(long, conflicts_with = "phone")]
        no_phone: bool,
        /// active, or paused to stop answering.
        #[arg(long, value_parser = parse_bot_status)]
        status: Option<BotStatus>,
        #[command(flatten)]
        fields: BotFields,
    },
    /// Delete a bot (with its flows and message log). Refused while messages wait to be
    /// sent, unless --force.
    #[command(visible_alias = "rm")]
    Delete {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// Delete even with messages still waiting to be sent (they are dropped).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// Check flow documents (TOML or JSON) without a daemon; exits 2 if any is invalid.
    Validate {
        /// The documents to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Import a flow document as the bot's next version (validated by dashd first).
    Import {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The document (TOML, or JSON for files ending in .json).
        file: PathBuf,
        /// Make it the version new conversations start on.
        #[arg(long)]
        activate: bool,
    },
    /// List a bot's flow versions.
    #[command(visible_alias = "ls")]
    List {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
    },
    /// Show a flow version: its flows, triggers and steps.
    Show {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// A version number, or `active`.
        #[arg(default_value = "active", value_name = "VERSION")]
        which: String,
    },
    /// Print a flow version's document, as imported (comments kept) or normalised.
    Export {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// A version number, or `active`.
        #[arg(default_value = "active", value_name = "VERSION")]
        which: String,
        /// Print the parsed document in a normal form instead of the imported text.
        #[arg(long)]
        canonical: bool,
        /// Format of the normal form.
        #[arg(long, value_enum, default_value_t = DocumentFormat::Toml, requires = "canonical")]
        format: DocumentFormat,
    },
    /// Make a version the one new conversations start on (running ones finish on theirs).
    Activate {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        #[arg(value_name = "VERSION")]
        number: u32,
    },
    /// Delete a version that is not active.
    #[command(visible_alias = "rm")]
    Delete {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        #[arg(value_name = "VERSION")]
        number: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List outgoing messages, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Only this bot's (TENANT/BOT or id).
        #[arg(long)]
        bot: Option<String>,
        /// Only messages in this state (pending, processing, sent, failed, dead, cancelled...).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a message with its status history.
    Show { id: String },
    /// Send a failed or dead message again.
    Retry { id: String },
    /// Cancel a pending or failed message.
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ConversationCommand {
    /// List a bot's conversations, most recent first.
    #[command(visible_alias = "ls")]
    List {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
    },
    /// Show a conversation's transcript and flow state.
    Show {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The contact's number.
        contact: String,
    },
    /// Give a handed-off conversation back to the bot.
    Resume {
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        contact: String,
    },
    /// Forget a conversation's flow state and timers (the transcript stays).
    Reset {
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        contact: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Every bot's paired sessions (bridges and Evolution instances): state, paired
    /// phone, since when, last error.
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's bots.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
    /// One bot's session with its recent state changes.
    Show {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider: baileys, venom, wwebjs or evolution (default: the first of them in
        /// the bot's chain).
        #[arg(long, value_name = "PROVIDER")]
        provider: Option<String>,
    },
    /// Pair a phone: starts the session and draws its QR code in the terminal, redrawn
    /// as WhatsApp rotates it, until the phone has scanned it (exit 0, with the paired
    /// number) or the session fails (non-zero, with the reason).
    ///
    /// On WhatsApp: Settings > Linked devices > Link a device, then point the camera at
    /// the code. Without a terminal the QR payload is printed as a line of text (and
    /// written as a picture with --png). With --pairing-code no QR is needed: type the
    /// code shown on the phone (Link a device > Link with phone number instead).
    Pair {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider: baileys, venom, wwebjs or evolution (default: the first of them in
        /// the bot's chain).
        #[arg(long, value_name = "PROVIDER")]
        provider: Option<String>,
        /// Draw dark modules in the foreground colour (for light terminal themes).
        #[arg(long)]
        invert: bool,
        /// Pair by a code typed on this phone (its number with country code, +15551234567)
        /// instead of scanning a QR code, where the library supports it (Baileys,
        /// whatsapp-web.js, Evolution).
        #[arg(long, value_name = "+PHONE")]
        pairing_code: Option<String>,
        /// Also write each QR code as a PNG picture to FILE (replaced as it rotates).
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Log the session out on its bridge or instance: the phone must pair again.
    Logout {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider: baileys, venom, wwebjs or evolution (default: the first of them in
        /// the bot's chain).
        #[arg(long, value_name = "PROVIDER")]
        provider: Option<String>,
    },
    /// Drop the session's connection and connect again with its stored credentials (no
    /// new pairing): for a stuck or failed session. A failed session gets its automatic
    /// restarts again.
    Restart {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider: baileys, venom, wwebjs or evolution (default: the first of them in
        /// the bot's chain).
        #[arg(long, value_name = "PROVIDER")]
        provider: Option<String>,
    },
    /// Print session state changes as they happen, until interrupted.
    Watch {
        /// Only this tenant's bots.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Show a bot's chain, its fallback policy and each provider's breaker.
    Show {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
    },
    /// Set the providers a bot sends through, first to last, e.g. `meta,twilio`: a send
    /// that fails on one is tried on the next.
    ///
    /// Each provider needs its settings before it can send: see `dashctl provider set
    /// --help`. Options not given keep their current value.
    Set {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The providers in order, comma-separated, each at most once.
        #[arg(required = true, value_delimiter = ',', value_name = "PROVIDER,...")]
        providers: Vec<String>,
        /// Consecutive failed sends that open a provider's breaker, so that it is
        /// skipped.
        #[arg(long, value_name = "N")]
        threshold: Option<u32>,
        /// How long an open breaker skips its provider before one send probes it again.
        #[arg(long, value_name = "SECONDS")]
        cooldown: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Write settings and secrets of one of a bot's providers, then show the result.
    ///
    /// What is given is merged into what is stored. The result says what is still
    /// missing, and which webhook URL to configure on the provider's side.
    ///
    /// Secrets are read from a file or from stdin, never from the command line, where
    /// shell history and `ps` would keep them. dashd stores them encrypted and never
    /// shows them back.
    #[command(
        after_help = "Run with --help for every provider's settings.",
        after_long_help = crate::provider::settings_help()
    )]
    Set {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider (one of those listed below).
        provider: String,
        /// Set a setting that is not a secret (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Set a secret from a file (NAME=@FILE) or from stdin (NAME=-, for one secret);
        /// a trailing newline is dropped (repeatable). NAME=VALUE is refused.
        #[arg(long = "secret", value_name = "NAME=@FILE|NAME=-")]
        secrets: Vec<String>,
        /// Remove a setting or secret (repeatable); a setting with a default goes back
        /// to it.
        #[arg(long, value_name = "NAME")]
        unset: Vec<String>,
    },
    /// Show one of a bot's providers: settings, secrets (set or not), what is missing.
    ///
    /// Also the webhook URL to configure on the provider's side, and what else to do
    /// there. Secret values are never shown: dashd does not return them.
    Show {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider.
        provider: String,
    },
    /// List the providers a bot has settings for.
    #[command(visible_alias = "ls")]
    List {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
    },
    /// Delete the settings and secrets of one of a bot's providers.
    #[command(visible_alias = "rm")]
    Delete {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider.
        provider: String,
    },
    /// Show the health of the chain entries of every bot, or of one.
    ///
    /// One row per chain entry: its breaker (closed: sending; open: skipped until the
    /// time shown; half_open: one send probes it), consecutive failures, last error,
    /// last success and median send latency.
    Status {
        /// Only this bot (TENANT/BOT or id).
        #[arg(value_parser = parse_bot_ref)]
        bot: Option<BotRef>,
    },
    /// Probe one of a bot's providers now; the outcome feeds its breaker.
    ///
    /// Exits 0 when the probe succeeds, 1 when it fails; the result is printed either
    /// way.
    Test {
        /// TENANT/BOT or the bot's id.
        #[arg(value_parser = parse_bot_ref)]
        bot: BotRef,
        /// The provider.
        provider: String,
    },
}

/// Text formats of a flow document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocumentFormat {
    Toml,
    Json,
}

/// Fields shared by `bot create` and `bot update`.
#[derive(Debug, Args)]
pub struct BotFields {
    /// WhatsApp number in E.164, e.g. +5491123456789 (spaces and dashes are dropped).
    #[arg(long)]
    pub phone: Option<String>,
    /// IANA time zone for business hours and dates, e.g. America/Argentina/Buenos_Aires
    /// [default on create: UTC].
    #[arg(long)]
    pub timezone: Option<String>,
    /// Settings document as a JSON object (replaces the whole document), or @FILE to
    /// read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub settings: Option<String>,
    /// Providers to send through, in order, e.g. `sandbox` [default on create: sandbox].
    #[arg(long, value_delimiter = ',', value_name = "PROVIDER,...")]
    pub chain: Option<Vec<String>>,
}

fn parse_tenant_status(value: &str) -> Result<TenantStatus, String> {
    value
        .parse()
        .map_err(|err: dash_core::ValidationError| err.message)
}

fn parse_bot_status(value: &str) -> Result<BotStatus, String> {
    value
        .parse()
        .map_err(|err: dash_core::ValidationError| err.message)
}

fn parse_bot_ref(value: &str) -> Result<BotRef, String> {
    BotRef::parse(value).map_err(|err| err.to_string())
}

/// `--set NAME=VALUE`. Only for settings that are not secrets, so the value may be
/// quoted in an error.
fn parse_setting(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err("expected NAME=VALUE, e.g. --set account_sid=AC123".into()),
    }
}

fn parse_bot_path(value: &str) -> Result<BotRef, String> {
    match BotRef::parse(value).map_err(|err| err.to_string())? {
        BotRef::Id(_) => Err("a new bot is named TENANT/BOT (e.g. acme/sales), not by id".into()),
        path => Ok(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
