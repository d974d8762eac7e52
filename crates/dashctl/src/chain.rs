//! `dashctl chain show|set`: the providers a bot sends through, in order, its fallback
//! policy, and the breaker of each chain entry.

use dash_core::BotRef;
use dash_core::api::{ChainView, ProviderView, SetChain};
use dash_core::provider::ProviderKind;

use crate::chat::bot_path;
use crate::cli::ChainCommand;
use crate::client::Client;
use crate::error::CliResult;
use crate::output::{Output, details, uptime};
use crate::provider::status_table;
use crate::sanitize::sanitize;

pub async fn run(client: &Client, out: Output, command: ChainCommand) -> CliResult {
    match command {
        ChainCommand::Show { bot } => {
            let view: ChainView = client.get(&chain_path(&bot)).await?;
            out.print(&view, || show(&view))
        }
        ChainCommand::Set {
            bot,
            providers,
            threshold,
            cooldown,
        } => {
            let req = SetChain {
                chain: providers,
                fallback_threshold_errors: threshold,
                fallback_cooldown_seconds: cooldown,
            };
            let view: ChainView = client.put(&chain_path(&bot), &req).await?;
            out.print(&view, || {
                format!("chain of {} set\n\n{}", view.bot, show(&view))
            })?;
            warn_unconfigured(client, &bot, &view).await;
            Ok(())
        }
    }
}

fn chain_path(bot: &BotRef) -> String {
    format!("{}/chain", bot_path(bot))
}

/// Warns (on stderr) about chain entries that cannot send yet: no settings stored, or
/// required ones missing. The chain is set either way; this is advice, so a failure to
/// look is not reported.
async fn warn_unconfigured(client: &Client, bot: &BotRef, view: &ChainView) {
    let Ok(entries) = client
        .get::<Vec<ProviderView>>(&format!("{}/providers", bot_path(bot)))
        .await
    else {
        return;
    };
    for name in &view.chain {
        let takes_settings = name
            .parse::<ProviderKind>()
            .map_or(true, |kind| !kind.settings().is_empty());
        if !takes_settings {
            continue;
        }
        let warning = match entries.iter().find(|entry| entry.provider == *name) {
            None => format!(
                "{name} has no settings yet: it cannot send until `dashctl provider set {} {name} ...` gives them (see `dashctl provider set --help`)",
                view.bot
            ),
            Some(entry) if !entry.missing.is_empty() => format!(
                "{name} cannot send until these are set: {}",
                entry.missing.join(", ")
            ),
            Some(_) => continue,
        };
        eprintln!("warning: {}", sanitize(&warning));
    }
}

fn show(view: &ChainView) -> String {
    format!(
        "{}\n\n{}",
        details(&[
            ("bot", view.bot.clone()),
            ("chain", view.chain.join(" → ")),
            (
                "fallback",
                format!(
                    "after {} failed sends in a row a provider is skipped for {}",
                    view.fallback_threshold_errors,
                    uptime(view.fallback_cooldown_seconds)
                ),
            ),
        ]),
        status_table(std::slice::from_ref(view), false).trim_fmt()
    )
}
