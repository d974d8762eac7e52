//! `dashctl chat` (play the customer of a sandbox bot) and `dashctl send`.

use std::time::Duration;

use dash_core::BotRef;
use dash_core::api::{
    Accepted, MessageBody, MessageRecord, SandboxEvent, SandboxInbound, SendMessage,
};
use serde::Serialize;
use tokio::io::AsyncBufReadExt;

use crate::client::{Client, EventStream};
use crate::error::{CliError, CliResult, Failure};
use crate::output::{Output, details, time};
use crate::sanitize::sanitize;
use crate::tenant::segment;

/// A reply as `--output json` prints it.
#[derive(Debug, Serialize)]
struct Reply {
    sent: String,
    body: MessageBody,
    at: chrono::DateTime<chrono::Utc>,
}

pub struct Chat<'a> {
    pub bot: BotRef,
    pub phone: String,
    pub name: Option<String>,
    pub send: Vec<String>,
    pub wait: f64,
    pub client: &'a Client,
    pub out: Output,
}

pub async fn run(chat: Chat<'_>) -> CliResult {
    let phone = dash_core::validate::phone("--as", &chat.phone)
        .map_err(|err| CliError::new(Failure::Invalid, err.to_string()))?;
    if !chat.wait.is_finite() || chat.wait <= 0.0 || chat.wait > 3600.0 {
        return Err(CliError::new(
            Failure::Invalid,
            "--wait must be between 0 and 3600 seconds",
        ));
    }
    let base = bot_path(&chat.bot);
    let mut stream = chat
        .client
        .stream(&format!(
            "{base}/sandbox/stream?contact={}",
            segment(&phone)
        ))
        .await?;
    if chat.send.is_empty() {
        return interactive(&chat, &base, &phone, stream).await;
    }
    let wait = Duration::from_secs_f64(chat.wait);
    let mut replies = Vec::new();
    let mut unfinished = None;
    for text in &chat.send {
        post(&chat, &base, &phone, text).await?;
        let (got, finished) = collect(&mut stream, wait).await?;
        replies.extend(got.into_iter().map(|(body, at)| Reply {
            sent: text.clone(),
            body,
            at,
        }));
        if !finished {
            unfinished = Some(text.clone());
            break;
        }
    }
    chat.out.print(&replies, || {
        replies
            .iter()
            .map(|r| render(&r.body))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    match unfinished {
        // The bot may still answer (a rate limit, a delay): say so rather than pretend.
        Some(text) => Err(CliError {
            code: Some("timeout".into()),
            ..CliError::new(
                Failure::Daemon,
                format!(
                    "the bot was still working on {text:?} after --wait {} s; its later replies are not shown (dashctl conversation show {} {phone})",
                    chat.wait, chat.bot
                ),
            )
        }),
        None => Ok(()),
    }
}

async fn post(chat: &Chat<'_>, base: &str, phone: &str, text: &str) -> CliResult<Accepted> {
    let message = SandboxInbound {
        from: phone.to_owned(),
        name: chat.name.clone(),
        text: text.to_owned(),
        reply_id: None,
        // A fresh id per message: a retried request is never handled twice.
        message_id: Some(uuid::Uuid::new_v4().to_string()),
    };
    chat.client
        .post(&format!("{base}/sandbox/messages"), &message)
        .await
}

/// Replies until the contact is idle again (every message handled and sent), or `wait`.
/// The flag says whether the contact got idle before `wait` ran out.
async fn collect(
    stream: &mut EventStream,
    wait: Duration,
) -> CliResult<(Vec<(MessageBody, chrono::DateTime<chrono::Utc>)>, bool)> {
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let event = match tokio::time::timeout_at(deadline, stream.next::<SandboxEvent>()).await {
            Err(_) => return Ok((replies, false)),
            Ok(event) => event?,
        };
        match event {
            Some(SandboxEvent::Reply { body, at, .. }) => replies.push((*body, at)),
            Some(SandboxEvent::Idle { .. }) => return Ok((replies, true)),
            None => {
                return Err(CliError::new(
                    Failure::Unreachable,
                    "dashd closed the conversation stream (is it stopping?)",
                ));
            }
        }
    }
}

async fn interactive(
    chat: &Chat<'_>,
    base: &str,
    phone: &str,
    mut stream: EventStream,
) -> CliResult {
    eprintln!(
        "Chatting with {} as {phone} through the sandbox. Type a message and press Enter; Ctrl-D ends.",
        chat.bot
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = line.map_err(|err| CliError::new(Failure::Invalid, format!("cannot read stdin: {err}")))?;
                let Some(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                post(chat, base, phone, &line).await?;
            }
            event = stream.next::<SandboxEvent>() => match event? {
                Some(SandboxEvent::Reply { body, .. }) => show(&body),
                Some(SandboxEvent::Idle { .. }) => {}
                None => return Err(CliError::new(Failure::Unreachable, "dashd closed the conversation stream")),
            },
        }
    }
    // Let the replies to the last message arrive before leaving (at most --wait).
    let (replies, _) = collect(&mut stream, Duration::from_secs_f64(chat.wait)).await?;
    for (body, _) in &replies {
        show(body);
    }
    Ok(())
}

/// Prints a reply in the interactive chat, continuation lines indented.
#[allow(clippy::print_stdout)] // the chat's output
fn show(body: &MessageBody) {
    for (i, line) in sanitize(&render(body)).lines().enumerate() {
        println!("{}{line}", if i == 0 { "bot> " } else { "     " });
    }
}

fn render(body: &MessageBody) -> String {
    match &body.media {
        Some(media) => format!("{}\n[{:?}: {}]", body.text, media.kind, media.url),
        None => body.text.clone(),
    }
}

pub async fn send(client: &Client, out: Output, bot: &BotRef, to: &str, text: &str) -> CliResult {
    let request = SendMessage {
        to: to.to_owned(),
        text: text.to_owned(),
        ..SendMessage::default()
    };
    let record: MessageRecord = client
        .post(&format!("{}/messages", bot_path(bot)), &request)
        .await?;
    out.print(&record, || {
        format!(
            "message {} queued for {}\n{}",
            record.id,
            record.contact,
            details(&[
                ("state", record.state.to_string()),
                ("created", time(&record.created_at))
            ])
        )
    })
}

pub fn bot_path(bot: &BotRef) -> String {
    match bot {
        BotRef::Id(id) => format!("/v1/bots/{id}"),
        BotRef::Path { tenant, bot } => {
            format!("/v1/tenants/{}/bots/{}", segment(tenant), segment(bot))
        }
    }
}
