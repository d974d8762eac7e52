//! `dashctl bot create|list|show|update|delete`.

use dash_core::api::{CreateBot, UpdateBot};
use dash_core::{Bot, BotRef};

use crate::cli::BotCommand;
use crate::client::Client;
use crate::error::{CliError, CliResult, Failure};
use crate::output::{Output, cells, details, table, time};
use crate::tenant::segment;

pub async fn run(client: &Client, out: Output, command: BotCommand) -> CliResult {
    match command {
        BotCommand::Create { bot, fields } => {
            let BotRef::Path { tenant, bot: name } = bot else {
                return Err(CliError::new(
                    Failure::Invalid,
                    "a new bot is named TENANT/BOT",
                ));
            };
            let req = CreateBot {
                name,
                phone: fields.phone,
                timezone: fields.timezone,
                settings: settings(fields.settings.as_deref())?,
                chain: fields.chain,
            };
            let bot: Bot = client
                .post(&format!("/v1/tenants/{}/bots", segment(&tenant)), &req)
                .await?;
            out.print(&bot, || {
                format!("bot {} created\n{}", bot.path(), show(&bot))
            })
        }
        BotCommand::List { tenant } => {
            let url = match &tenant {
                Some(tenant) => format!("/v1/tenants/{}/bots", segment(tenant)),
                None => "/v1/bots".to_owned(),
            };
            let bots: Vec<Bot> = client.get(&url).await?;
            out.print_list(
                &bots,
                "No bots yet: create one with `dashctl bot create TENANT/BOT`.",
                || {
                    let mut t = table(&["BOT", "PHONE", "TIMEZONE", "STATUS", "CREATED"]);
                    for bot in &bots {
                        t.add_row(cells([
                            bot.path(),
                            bot.phone.clone().unwrap_or_else(|| "-".into()),
                            bot.timezone.clone(),
                            bot.status.to_string(),
                            time(&bot.created_at),
                        ]));
                    }
                    t
                },
            )
        }
        BotCommand::Show { bot } => {
            let bot: Bot = client.get(&path(&bot)).await?;
            out.print(&bot, || show(&bot))
        }
        BotCommand::Update {
            bot,
            name,
            no_phone,
            status,
            fields,
        } => {
            let phone = if no_phone {
                Some(None)
            } else {
                fields.phone.map(Some)
            };
            let changes = UpdateBot {
                name,
                phone,
                timezone: fields.timezone,
                status,
                settings: settings(fields.settings.as_deref())?,
                chain: fields.chain,
            };
            if changes.is_empty() {
                return Err(CliError::new(
                    Failure::Invalid,
                    "nothing to change: give --name, --phone, --no-phone, --timezone, --status, --settings or --chain",
                ));
            }
            let bot: Bot = client.patch(&path(&bot), &changes).await?;
            out.print(&bot, || {
                format!("bot {} updated\n{}", bot.path(), show(&bot))
            })
        }
        BotCommand::Delete { bot, force } => {
            let record: Bot = client.get(&path(&bot)).await?;
            out.confirm(&format!(
                "Delete bot {} with its flows and message log?",
                record.path()
            ))?;
            let url = format!("{}?force={force}", path(&BotRef::Id(record.id)));
            let deleted: Bot = client.delete(&url).await?;
            out.print(&deleted, || format!("bot {} deleted", deleted.path()))
        }
    }
}

fn path(bot: &BotRef) -> String {
    match bot {
        BotRef::Id(id) => format!("/v1/bots/{id}"),
        BotRef::Path { tenant, bot } => {
            format!("/v1/tenants/{}/bots/{}", segment(tenant), segment(bot))
        }
    }
}

/// Parses `--settings`: inline JSON, or `@FILE`.
fn settings(arg: Option<&str>) -> CliResult<Option<serde_json::Value>> {
    let Some(arg) = arg else { return Ok(None) };
    let text = match arg.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).map_err(|err| {
            CliError::new(
                Failure::Invalid,
                format!("settings: cannot read {file}: {err}"),
            )
        })?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| CliError::new(Failure::Invalid, format!("settings: not valid JSON: {err}")))
}

fn show(bot: &Bot) -> String {
    let settings = serde_json::to_string_pretty(&bot.settings).unwrap_or_default();
    details(&[
        ("bot", bot.path()),
        ("phone", bot.phone.clone().unwrap_or_else(|| "-".into())),
        ("timezone", bot.timezone.clone()),
        ("chain", {
            let chain: Vec<&str> = dash_core::provider::chain_of(&bot.settings)
                .iter()
                .map(|k| k.as_str())
                .collect();
            chain.join(" → ")
        }),
        ("status", bot.status.to_string()),
        (
            "flows",
            bot.flow_version
                .map_or_else(|| "none active".to_owned(), |v| format!("version {v}")),
        ),
        ("id", bot.id.to_string()),
        ("tenant id", bot.tenant_id.to_string()),
        ("created", time(&bot.created_at)),
        ("updated", time(&bot.updated_at)),
        ("settings", settings),
    ])
}
