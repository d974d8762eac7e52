//! `dashctl provider set|show|list|delete|status|test`: the settings and secrets of a
//! bot's providers, the health of its chain entries, and a probe on demand.
//!
//! Secrets reach dashd from a file or from stdin, never from the command line (shell
//! history and `ps` would keep them), and nothing here prints one: dashd only ever says
//! whether a secret is set, and what was read for it is sent and forgotten, not echoed,
//! not even in an error.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read};

use comfy_table::Table;
use dash_core::BotRef;
use dash_core::api::{ChainView, ProbeResult, ProviderView, SetProvider};
use dash_core::provider::ProviderKind;

use crate::chat::bot_path;
use crate::cli::ProviderCommand;
use crate::client::Client;
use crate::error::{CliError, CliResult, Failure};
use crate::output::{Output, cells, details, table, time};
use crate::sanitize::sanitize;
use crate::tenant::segment;

/// The largest secret read from a file or stdin: far above any token, far below a file
/// given by mistake.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// The JSON error code of a failed probe (`provider test`).
const PROBE_FAILED: &str = "probe_failed";

pub async fn run(client: &Client, out: Output, command: ProviderCommand) -> CliResult {
    match command {
        ProviderCommand::Set {
            bot,
            provider,
            settings,
            secrets,
            unset,
        } => {
            let stdin = std::io::stdin();
            let stdin_is_terminal = stdin.is_terminal();
            let req = request(
                settings,
                &secrets,
                unset,
                &mut stdin.lock(),
                stdin_is_terminal,
            )?;
            let view: ProviderView = client.put(&entry_path(&bot, &provider), &req).await?;
            out.print(&view, || {
                format!(
                    "{} settings of {} saved\n\n{}",
                    view.provider,
                    view.bot,
                    show(&view)
                )
            })?;
            if !view.missing.is_empty() {
                eprintln!(
                    "warning: {}",
                    sanitize(&format!(
                        "{} cannot send for {} until these are set: {}",
                        view.provider,
                        view.bot,
                        view.missing.join(", ")
                    ))
                );
            }
            Ok(())
        }
        ProviderCommand::Show { bot, provider } => {
            let view: ProviderView = client.get(&entry_path(&bot, &provider)).await?;
            out.print(&view, || show(&view))
        }
        ProviderCommand::List { bot } => {
            let views: Vec<ProviderView> =
                client.get(&format!("{}/providers", bot_path(&bot))).await?;
            let chain: ChainView = client.get(&format!("{}/chain", bot_path(&bot))).await?;
            out.print_list(
                &views,
                &format!(
                    "{bot} has no provider settings yet: add some with `dashctl provider set {bot} PROVIDER --set NAME=VALUE`."
                ),
                || {
                    let mut t = table(&["PROVIDER", "IN CHAIN", "SECRETS", "MISSING", "UPDATED"]);
                    for view in &views {
                        let position = chain
                            .chain
                            .iter()
                            .position(|name| *name == view.provider)
                            .map_or_else(|| "no".to_owned(), |i| format!("#{}", i + 1));
                        let set = view.secrets.values().filter(|v| *v == "set").count();
                        t.add_row(cells([
                            view.provider.clone(),
                            position,
                            format!("{set} of {} set", view.secrets.len()),
                            none_if_empty(&view.missing),
                            view.updated_at.as_ref().map_or_else(|| "-".into(), time),
                        ]));
                    }
                    t
                },
            )
        }
        ProviderCommand::Delete { bot, provider } => {
            let view: ProviderView = client.get(&entry_path(&bot, &provider)).await?;
            // A view without a time of update is a provider with nothing stored: nothing
            // to ask about, nothing to delete.
            if view.updated_at.is_none() {
                return Err(CliError::new(
                    Failure::NotFound,
                    format!("bot {} has no {} settings", view.bot, view.provider),
                ));
            }
            let chain: ChainView = client.get(&format!("{}/chain", bot_path(&bot))).await?;
            let consequence = if chain.chain.contains(&view.provider) {
                format!(
                    " {} stays in the bot's chain and cannot send without them.",
                    view.provider
                )
            } else {
                String::new()
            };
            out.confirm(&sanitize(&format!(
                "Delete the {} settings and secrets of {}?{consequence}",
                view.provider, view.bot
            )))?;
            let deleted: serde_json::Value = client.delete(&entry_path(&bot, &provider)).await?;
            out.print(&deleted, || {
                format!("{} settings of {} deleted", view.provider, view.bot)
            })
        }
        ProviderCommand::Status { bot } => {
            let views: Vec<ChainView> = match &bot {
                Some(bot) => vec![client.get(&format!("{}/chain", bot_path(bot))).await?],
                None => client.get("/v1/providers/status").await?,
            };
            out.print_list(
                &views,
                "No bots yet: create one with `dashctl bot create TENANT/BOT`.",
                || status_table(&views, true),
            )
        }
        ProviderCommand::Test { bot, provider } => {
            let result: ProbeResult = client
                .post(
                    &format!("{}/test", entry_path(&bot, &provider)),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&result, || probe_text(&result))?;
            if result.ok {
                return Ok(());
            }
            Err(CliError {
                code: Some(PROBE_FAILED.to_owned()),
                ..CliError::new(
                    Failure::Daemon,
                    format!(
                        "the {} probe of {bot} failed: {}",
                        result.provider, result.detail
                    ),
                )
            })
        }
    }
}

/// `/v1/.../bots/{bot}/providers/{provider}`.
fn entry_path(bot: &BotRef, provider: &str) -> String {
    format!("{}/providers/{}", bot_path(bot), segment(provider))
}

/// Where a secret given with `--secret` is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretSource<'a> {
    File(&'a str),
    Stdin,
}

/// Builds the request of `provider set`, reading the secrets: every check that needs no
/// daemon is made here, before anything is sent.
fn request(
    settings: Vec<(String, String)>,
    secret_args: &[String],
    unset: Vec<String>,
    stdin: &mut dyn Read,
    stdin_is_terminal: bool,
) -> CliResult<SetProvider> {
    if settings.is_empty() && secret_args.is_empty() && unset.is_empty() {
        return Err(CliError::new(
            Failure::Invalid,
            "nothing to change: give --set NAME=VALUE, --secret NAME=@FILE or --unset NAME",
        ));
    }
    let sources = secret_args
        .iter()
        .map(|arg| secret_source(arg))
        .collect::<CliResult<Vec<_>>>()?;
    if sources
        .iter()
        .filter(|(_, source)| *source == SecretSource::Stdin)
        .count()
        > 1
    {
        return Err(invalid(
            "only one --secret can be read from stdin (NAME=-): read the others from files (NAME=@FILE)",
        ));
    }
    let mut seen = BTreeSet::new();
    let names = settings
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(sources.iter().map(|(name, _)| *name))
        .chain(unset.iter().map(String::as_str));
    for name in names {
        if !seen.insert(name) {
            return Err(invalid(format!(
                "{} is given more than once (in --set, --secret or --unset)",
                dash_core::validate::quoted(name)
            )));
        }
    }
    let mut secrets = BTreeMap::new();
    for (name, source) in sources {
        let value = match source {
            SecretSource::File(file) => read_secret_file(name, file)?,
            SecretSource::Stdin => read_secret_stdin(name, stdin, stdin_is_terminal)?,
        };
        secrets.insert(name.to_owned(), value);
    }
    Ok(SetProvider {
        settings: settings.into_iter().collect(),
        secrets,
        unset,
    })
}

/// Splits `NAME=@FILE` or `NAME=-`. Anything else may hold a secret typed on the command
/// line, so no error quotes the argument: only a name that is a known setting's.
fn secret_source(arg: &str) -> CliResult<(&str, SecretSource<'_>)> {
    let Some((name, source)) = arg.split_once('=') else {
        return Err(invalid(
            "--secret takes NAME=@FILE (read the secret from a file) or NAME=- (from stdin)",
        ));
    };
    let name = name.trim();
    let shown = if is_setting_name(name) { name } else { "NAME" };
    if name.is_empty() {
        return Err(invalid(
            "--secret needs the secret's name: NAME=@FILE or NAME=-",
        ));
    }
    match source {
        "-" => Ok((name, SecretSource::Stdin)),
        _ => match source.strip_prefix('@') {
            Some("") => Err(invalid(format!(
                "--secret {shown}=@ names no file: use {shown}=@FILE"
            ))),
            Some(file) => Ok((name, SecretSource::File(file))),
            None => Err(invalid(format!(
                "--secret {shown}=VALUE is refused: a secret on the command line stays in shell history and shows in `ps`. Put it in a file and give {shown}=@FILE, or pipe it in with {shown}=-"
            ))),
        },
    }
}

/// Whether some provider takes a setting called `name` (such a name is safe to print).
fn is_setting_name(name: &str) -> bool {
    ProviderKind::ALL
        .iter()
        .any(|kind| kind.setting(name).is_some())
}

fn read_secret_file(name: &str, file: &str) -> CliResult<String> {
    let fail = |what: String| invalid(format!("--secret {name}: {file}: {what}"));
    let handle = std::fs::File::open(file).map_err(|err| fail(format!("cannot read it: {err}")))?;
    let text = read_secret(handle).map_err(fail)?;
    if text.is_empty() {
        return Err(fail("is empty".into()));
    }
    Ok(text)
}

fn read_secret_stdin(name: &str, stdin: &mut dyn Read, is_terminal: bool) -> CliResult<String> {
    if is_terminal {
        // Typed on a terminal, the secret would show on screen and in its scrollback.
        return Err(invalid(format!(
            "--secret {name}=- reads the secret from stdin, which is a terminal here: pipe it in (`pass show ... | dashctl ...`) or put it in a file and give {name}=@FILE"
        )));
    }
    let text =
        read_secret(stdin).map_err(|what| invalid(format!("--secret {name}=-: stdin {what}")))?;
    if text.is_empty() {
        return Err(invalid(format!("--secret {name}=-: stdin is empty")));
    }
    Ok(text)
}

/// Reads a secret, bounded in size, without its trailing newline (`echo` adds one, and
/// so do most editors). The error never holds any of what was read.
fn read_secret(source: impl Read) -> Result<String, String> {
    let mut bytes = Vec::new();
    source
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot be read: {err}"))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "is larger than {} KiB: is it the right file?",
            MAX_SECRET_BYTES / 1024
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

fn invalid(message: impl Into<String>) -> CliError {
    CliError::new(Failure::Invalid, message)
}

/// One provider entry as people read it: the record, its settings, what to do on the
/// provider's side.
fn show(view: &ProviderView) -> String {
    let mut text = details(&[
        ("bot", view.bot.clone()),
        ("provider", view.provider.clone()),
        (
            "missing",
            if view.missing.is_empty() {
                "nothing: it can send".to_owned()
            } else {
                format!("{} (needed before it can send)", view.missing.join(", "))
            },
        ),
        (
            "webhook URL",
            view.webhook_url.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "updated",
            view.updated_at
                .as_ref()
                .map_or_else(|| "never: nothing is stored".into(), time),
        ),
    ]);
    text.push_str("\n\n");
    text.push_str(&settings_table(view).trim_fmt());
    if !view.instructions.is_empty() {
        text.push_str("\n\nOn the provider's side:");
        for line in &view.instructions {
            text.push_str(&format!("\n  - {line}"));
        }
    }
    text
}

/// Every setting and secret of the entry, in the order the provider declares them
/// (names this dashctl does not know, from a newer dashd, last).
fn settings_table(view: &ProviderView) -> Table {
    let specs = view
        .provider
        .parse::<ProviderKind>()
        .map(ProviderKind::settings)
        .unwrap_or_default();
    let mut t = table(&["SETTING", "VALUE", "NOTE"]);
    let mut row = |name: &str, secret: bool, required: bool| {
        let value = if secret {
            view.secrets
                .get(name)
                .cloned()
                .unwrap_or_else(|| "not set".into())
        } else {
            view.settings
                .get(name)
                .cloned()
                .unwrap_or_else(|| "-".into())
        };
        let mut notes = Vec::new();
        if secret {
            notes.push("secret");
        }
        if view.missing.iter().any(|missing| missing == name) {
            notes.push("missing");
        } else if required {
            notes.push("required");
        }
        t.add_row(cells([name, value.as_str(), notes.join(", ").as_str()]));
    };
    for spec in specs {
        row(spec.name, spec.secret, spec.required);
    }
    let known = |name: &&String| !specs.iter().any(|spec| spec.name == name.as_str());
    for name in view.settings.keys().filter(known) {
        row(name, false, false);
    }
    for name in view.secrets.keys().filter(known) {
        row(name, true, false);
    }
    t
}

/// The breaker table of `provider status` and `chain show`: one row per chain entry.
pub fn status_table(views: &[ChainView], with_bot: bool) -> Table {
    let mut header = vec![
        "PROVIDER",
        "BREAKER",
        "FAILURES",
        "OPEN UNTIL",
        "LAST ERROR",
        "LAST SUCCESS",
        "P50 LATENCY",
    ];
    if with_bot {
        header.insert(0, "BOT");
    }
    let mut t = table(&header);
    for view in views {
        for status in &view.providers {
            let mut row = vec![
                status.provider.clone(),
                status.breaker.clone(),
                status.consecutive_failures.to_string(),
                status.open_until.as_ref().map_or_else(|| "-".into(), time),
                status
                    .last_error
                    .as_deref()
                    .map_or_else(|| "-".into(), |error| short(error, 50)),
                status
                    .last_success_at
                    .as_ref()
                    .map_or_else(|| "-".into(), time),
                status
                    .p50_latency_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
            ];
            if with_bot {
                row.insert(0, view.bot.clone());
            }
            t.add_row(cells(row));
        }
    }
    t
}

fn probe_text(result: &ProbeResult) -> String {
    let outcome = if result.ok {
        "ok".to_owned()
    } else {
        match result.error_class {
            Some(class) => format!(
                "failed ({})",
                serde_json::to_value(class)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            None => "failed".to_owned(),
        }
    };
    let mut rows = vec![
        ("provider", result.provider.clone()),
        ("result", outcome),
        ("latency", format!("{} ms", result.latency_ms)),
    ];
    if let Some(code) = &result.error_code {
        rows.push(("error code", code.clone()));
    }
    rows.push(("detail", result.detail.clone()));
    details(&rows)
}

fn none_if_empty(names: &[String]) -> String {
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(", ")
    }
}

/// `text` on one line, cut to `max` characters.
fn short(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max - 1).collect::<String>())
    } else {
        one_line
    }
}

/// The `provider set --help` epilogue: examples, then every provider's settings, built
/// from [`ProviderKind::settings`] so that it cannot drift from what dashd accepts.
pub fn settings_help() -> String {
    let mut text = String::from(
        "Examples:\n  \
         dashctl provider set acme/sales twilio --set account_sid=AC123 --secret auth_token=@token.txt\n  \
         pass show meta/token | dashctl provider set acme/sales meta --secret access_token=-\n\n\
         Settings by provider (a secret is given with --secret, any other with --set):\n",
    );
    for kind in ProviderKind::ALL {
        let specs = kind.settings();
        if specs.is_empty() {
            text.push_str(&format!("\n  {kind}: takes no settings\n"));
            continue;
        }
        text.push_str(&format!("\n  {kind}:\n"));
        for spec in specs {
            let mut tags = Vec::new();
            if spec.secret {
                tags.push("secret".to_owned());
            }
            if spec.required {
                tags.push("required".to_owned());
            }
            if let Some(default) = spec.default {
                tags.push(format!("default: {default}"));
            }
            let tags = if tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", tags.join(", "))
            };
            text.push_str(&format!("    {}{tags}\n        {}\n", spec.name, spec.help));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_help_lists_every_setting_with_its_default_and_secrecy() {
        let mut cli = crate::cli::Cli::command();
        let help = cli
            .find_subcommand_mut("provider")
            .and_then(|c| c.find_subcommand_mut("set"))
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        for kind in ProviderKind::ALL {
            assert!(help.contains(&format!("  {kind}:")), "{kind}: {help}");
            for spec in kind.settings() {
                let line = help
                    .lines()
                    .skip_while(|line| line.trim() != format!("{kind}:"))
                    .find(|line| {
                        line.trim_start() == spec.name
                            || line.trim_start().starts_with(&format!("{} [", spec.name))
                    })
                    .unwrap_or_else(|| panic!("{kind}.{} is not listed: {help}", spec.name));
                assert_eq!(line.contains("secret"), spec.secret, "{line}");
                if let Some(default) = spec.default {
                    assert!(line.contains(&format!("default: {default}")), "{line}");
                }
            }
        }
    }

    #[test]
    fn secrets_come_from_files_and_stdin_without_trailing_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\r\n").unwrap();
        let arg = format!("auth_token=@{}", file.display());
        let mut stdin: &[u8] = b"from-stdin\n";
        let req = request(
            vec![("from".into(), "+14155238886".into())],
            &[arg, "api_key=-".into()],
            vec!["public_url".into()],
            &mut stdin,
            false,
        )
        .unwrap();
        assert_eq!(req.secrets["auth_token"], "from-file");
        assert_eq!(req.secrets["api_key"], "from-stdin");
        assert_eq!(req.settings["from"], "+14155238886");
        assert_eq!(req.unset, ["public_url"]);
    }

    #[test]
    fn secret_values_on_the_command_line_are_refused_without_being_quoted() {
        for arg in [
            "auth_token=hunter2-value",
            "hunter2-value",
            "hunter2=value",
            "=-",
            "token=@",
        ] {
            let err =
                request(Vec::new(), &args(&[arg]), Vec::new(), &mut &b""[..], false).unwrap_err();
            assert_eq!(err.failure, Failure::Invalid, "{arg}");
            assert!(!err.message.contains("hunter2"), "{arg}: {}", err.message);
            assert!(!err.message.contains("value"), "{arg}: {}", err.message);
        }
        let err = request(
            Vec::new(),
            &args(&["auth_token=hunter2"]),
            Vec::new(),
            &mut &b""[..],
            false,
        )
        .unwrap_err();
        assert!(err.message.contains("auth_token=@FILE"), "{}", err.message);
    }

    #[test]
    fn stdin_gives_one_secret_and_never_from_a_terminal() {
        let err = request(
            Vec::new(),
            &args(&["token=-", "api_key=-"]),
            Vec::new(),
            &mut &b"x"[..],
            false,
        )
        .unwrap_err();
        assert!(err.message.contains("only one"), "{}", err.message);
        let err = request(
            Vec::new(),
            &args(&["token=-"]),
            Vec::new(),
            &mut &b"x"[..],
            true,
        )
        .unwrap_err();
        assert!(err.message.contains("terminal"), "{}", err.message);
        let err = request(
            Vec::new(),
            &args(&["token=-"]),
            Vec::new(),
            &mut &b"\n"[..],
            false,
        )
        .unwrap_err();
        assert!(err.message.contains("empty"), "{}", err.message);
    }

    #[test]
    fn names_are_given_once_and_something_is_asked() {
        let err = request(
            vec![("from".into(), "a".into())],
            &[],
            vec!["from".into()],
            &mut &b""[..],
            false,
        )
        .unwrap_err();
        assert!(err.message.contains("more than once"), "{}", err.message);
        let err = request(Vec::new(), &[], Vec::new(), &mut &b""[..], false).unwrap_err();
        assert!(err.message.contains("nothing to change"), "{}", err.message);
    }

    #[test]
    fn oversized_and_binary_secrets_are_refused_without_their_content() {
        let big = vec![b'a'; usize::try_from(MAX_SECRET_BYTES).unwrap() + 1];
        assert!(read_secret(&big[..]).unwrap_err().contains("larger"));
        assert_eq!(
            read_secret(&b"\xffsecret"[..]).unwrap_err(),
            "is not UTF-8 text"
        );
    }
}
