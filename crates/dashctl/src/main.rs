//! `dashctl`: the command-line client of dashd. One module per noun, one admin-API
//! client, one output layer.

mod bot;
mod chain;
mod chat;
mod cli;
mod client;
mod error;
mod flow;
mod output;
mod provider;
mod queue;
mod sanitize;
mod session;
mod status;
mod tenant;
mod user;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use dash_core::api::{ErrorBody, ErrorDetail};

use crate::cli::{Cli, Command, OutputFormat};
use crate::client::Client;
use crate::error::{CliError, CliResult, Failure};
use crate::output::Output;
use crate::sanitize::sanitize;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    let format = cli.output;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err, format);
            err.failure.exit_code()
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let out = Output {
        format: cli.output,
        assume_yes: cli.yes,
    };
    match &cli.command {
        Command::Completions { shell } => {
            let stdout = &mut std::io::stdout();
            clap_complete::generate(*shell, &mut Cli::command(), "dashctl", stdout);
            return Ok(());
        }
        Command::Man { dir } => return write_man_pages(dir),
        Command::Flow(cli::FlowCommand::Validate { files }) => return flow::validate(out, files),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::new(Failure::Daemon, format!("cannot start: {err}")))?;
    let result = runtime.block_on(async {
        let socket = client::find_socket(cli.socket.as_deref())?;
        let client = Client::new(socket, cli.verbose)?;
        match cli.command {
            Command::Status => status::run(&client, out).await,
            Command::Tenant(command) => tenant::run(&client, out, command).await,
            Command::Bot(command) => bot::run(&client, out, command).await,
            Command::User(command) => user::run(&client, out, command).await,
            Command::Key(command) => user::keys(&client, out, command).await,
            Command::Flow(command) => flow::run(&client, out, command).await,
            Command::Chain(command) => chain::run(&client, out, command).await,
            Command::Provider(command) => provider::run(&client, out, command).await,
            Command::Session(command) => session::run(&client, out, command).await,
            Command::Chat {
                bot,
                phone,
                name,
                send,
                wait,
            } => {
                chat::run(chat::Chat {
                    bot,
                    phone,
                    name,
                    send,
                    wait,
                    client: &client,
                    out,
                })
                .await
            }
            Command::Send { bot, to, text } => chat::send(&client, out, &bot, &to, &text).await,
            Command::Queue(command) => queue::queue(&client, out, command).await,
            Command::Conversation(command) => queue::conversation(&client, out, command).await,
            Command::Completions { .. } | Command::Man { .. } => Ok(()),
        }
    });
    // Do not wait for a blocked stdin read (interactive chat) to finish.
    runtime.shutdown_background();
    result
}

/// Writes `dashctl.1` and `dashctl-NOUN-VERB.1` pages generated from the clap definition.
fn write_man_pages(dir: &std::path::Path) -> CliResult {
    let fail = |err: std::io::Error| {
        CliError::new(
            Failure::Invalid,
            format!("cannot write man pages to {}: {err}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(fail)?;
    eprintln!("man pages written to {}", dir.display());
    Ok(())
}

/// Help and version go to stdout as usual; a usage error is JSON on stderr when the
/// command line asked for JSON output (scripts parse it), clap's text otherwise.
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let wants_json = {
        let args: Vec<String> = std::env::args().collect();
        args.windows(2)
            .any(|w| (w[0] == "-o" || w[0] == "--output") && w[1] == "json")
            || args.iter().any(|a| a == "--output=json" || a == "-ojson")
    };
    if wants_json
        && !matches!(
            err.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        )
    {
        let message = err.render().to_string();
        let message = message
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        let body = ErrorBody {
            error: ErrorDetail {
                code: "usage".to_owned(),
                message: message.to_owned(),
                field: None,
                details: Vec::new(),
            },
        };
        eprintln!("{}", serde_json::to_string(&body).unwrap_or_default());
        return ExitCode::from(2);
    }
    let _ = err.print();
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

fn report(err: &CliError, format: OutputFormat) {
    match format {
        OutputFormat::Table => {
            eprint!("{}", error_text(err));
        }
        OutputFormat::Json => {
            let body = ErrorBody {
                error: ErrorDetail {
                    code: err
                        .code
                        .clone()
                        .unwrap_or_else(|| err.failure.code().to_owned()),
                    message: err.message.clone(),
                    field: err.field.clone(),
                    details: err.details.clone(),
                },
            };
            eprintln!(
                "{}",
                serde_json::to_string(&body).unwrap_or_else(|_| err.message.clone())
            );
        }
    }
}

/// An error as people read it: the message, then each detail indented, sanitised since
/// dashd's messages may quote what a tenant or a customer wrote.
fn error_text(err: &CliError) -> String {
    let mut text = format!("dashctl: {}\n", sanitize(&err.message));
    for detail in &err.details {
        text.push_str(&format!("  {}\n", sanitize(detail)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_and_details_are_sanitised() {
        let err = CliError {
            details: vec!["step \u{1b}[2J: bad".into(), "plain".into()],
            ..CliError::new(Failure::Invalid, "flow \u{1b}]0;pwned\u{7} refused")
        };
        assert_eq!(
            error_text(&err),
            "dashctl: flow ^[]0;pwned^G refused\n  step ^[[2J: bad\n  plain\n"
        );
    }
}
