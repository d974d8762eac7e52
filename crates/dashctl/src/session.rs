//! `dashctl session list|show|pair|logout|restart|watch`: the paired WhatsApp Web
//! sessions of the bridge providers. `pair` draws the QR code in the terminal as Unicode
//! half-blocks (two modules per character cell, quiet zone included), redraws it in place
//! when the library rotates it, and ends with the paired phone number.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use dash_core::BotRef;
use dash_core::api::{ChainView, SessionView};
use dash_core::provider::ProviderKind;
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

use crate::chat::bot_path;
use crate::cli::SessionCommand;
use crate::client::Client;
use crate::error::{CliError, CliResult, Failure};
use crate::output::{Output, cells, details, table, time};
use crate::sanitize::sanitize;

pub async fn run(client: &Client, out: Output, command: SessionCommand) -> CliResult {
    match command {
        SessionCommand::List { tenant } => {
            let path = match &tenant {
                Some(slug) => format!("/v1/sessions?tenant={}", crate::tenant::segment(slug)),
                None => "/v1/sessions".to_owned(),
            };
            let sessions: Vec<SessionView> = client.get(&path).await?;
            out.print_list(
                &sessions,
                "no bridge sessions yet (dashctl session pair TENANT/BOT)",
                || {
                    let mut t =
                        table(&["BOT", "PROVIDER", "STATE", "PHONE", "SINCE", "LAST ERROR"]);
                    for s in &sessions {
                        t.add_row(cells([
                            s.bot.clone(),
                            s.provider.clone(),
                            s.state.clone(),
                            s.phone.clone().unwrap_or_else(|| "-".into()),
                            time(&s.since),
                            s.reason.clone().unwrap_or_else(|| "-".into()),
                        ]));
                    }
                    t
                },
            )
        }
        SessionCommand::Show { bot, provider } => {
            let provider = bridge_of(client, &bot, provider.as_deref()).await?;
            let view: SessionView = client
                .get(&format!("{}/sessions/{provider}", bot_path(&bot)))
                .await?;
            out.print(&view, || show(&view))
        }
        SessionCommand::Pair {
            bot,
            provider,
            invert,
            timeout,
        } => {
            let provider = bridge_of(client, &bot, provider.as_deref()).await?;
            pair(client, out, &bot, &provider, invert, timeout).await
        }
        SessionCommand::Logout { bot, provider } => {
            let provider = bridge_of(client, &bot, provider.as_deref()).await?;
            out.confirm(&format!(
                "Log out the {provider} session of {}? Its phone must pair again.",
                bot_label(&bot)
            ))?;
            let view: SessionView = client
                .post(
                    &format!("{}/sessions/{provider}/logout", bot_path(&bot)),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&view, || {
                format!("{} session of {} logged out", view.provider, view.bot)
            })
        }
        SessionCommand::Restart { bot, provider } => {
            let provider = bridge_of(client, &bot, provider.as_deref()).await?;
            let view: SessionView = client
                .post(
                    &format!("{}/sessions/{provider}/start", bot_path(&bot)),
                    &serde_json::json!({}),
                )
                .await?;
            out.print(&view, || show(&view))
        }
        SessionCommand::Watch { tenant } => {
            let path = match &tenant {
                Some(slug) => format!(
                    "/v1/sessions/stream?tenant={}",
                    crate::tenant::segment(slug)
                ),
                None => "/v1/sessions/stream".to_owned(),
            };
            let mut stream = client.stream(&path).await?;
            while let Some(view) = stream.next::<SessionView>().await? {
                out.print(&view, || {
                    format!(
                        "{}  {} {}: {}{}",
                        time(&view.updated_at),
                        view.bot,
                        view.provider,
                        view.state,
                        view.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })?;
            }
            Ok(())
        }
    }
}

fn bot_label(bot: &BotRef) -> String {
    match bot {
        BotRef::Path { tenant, bot } => format!("{tenant}/{bot}"),
        BotRef::Id(id) => id.to_string(),
    }
}

/// The bridge provider to act on: the one given, or the first bridge in the bot's chain.
async fn bridge_of(client: &Client, bot: &BotRef, given: Option<&str>) -> CliResult<String> {
    if let Some(name) = given {
        return match name.parse::<ProviderKind>() {
            Ok(kind) if kind.is_bridge() => Ok(kind.as_str().to_owned()),
            _ => Err(CliError::new(
                Failure::Invalid,
                format!(
                    "{} is not a bridge provider: use baileys, venom or wwebjs",
                    sanitize(name)
                ),
            )),
        };
    }
    let chain: ChainView = client.get(&format!("{}/chain", bot_path(bot))).await?;
    chain
        .chain
        .iter()
        .find(|name| name.parse::<ProviderKind>().is_ok_and(ProviderKind::is_bridge))
        .cloned()
        .ok_or_else(|| {
            CliError::new(
                Failure::Invalid,
                format!(
                    "{}'s chain ({}) has no bridge provider: add baileys, venom or wwebjs (dashctl chain set), or give --provider",
                    chain.bot,
                    chain.chain.join(",")
                ),
            )
        })
}

fn show(view: &SessionView) -> String {
    let mut text = details(&[
        ("bot", view.bot.clone()),
        ("provider", view.provider.clone()),
        ("session", view.session.clone()),
        ("state", view.state.clone()),
        ("phone", view.phone.clone().unwrap_or_else(|| "-".into())),
        ("since", time(&view.since)),
        ("reason", view.reason.clone().unwrap_or_else(|| "-".into())),
    ]);
    if !view.history.is_empty() {
        let mut t = table(&["AT", "STATE", "REASON"]);
        for change in &view.history {
            t.add_row(cells([
                time(&change.at),
                change.state.clone(),
                change.reason.clone().unwrap_or_default(),
            ]));
        }
        text.push_str(&format!("\n\nhistory:\n{}", t.trim_fmt()));
    }
    text
}

/// Starts the session and follows it until it is ready (exit 0, with the phone), fails
/// or is logged out (exit 1), or `timeout` seconds pass (exit 1). QR codes are drawn as
/// they come; on a terminal each replaces the one before.
async fn pair(
    client: &Client,
    out: Output,
    bot: &BotRef,
    provider: &str,
    invert: bool,
    timeout: u64,
) -> CliResult {
    let base = bot_path(bot);
    // The stream first, so no change between the start and the watch is missed.
    let mut stream = client
        .stream(&format!(
            "/v1/sessions/stream?bot={}",
            crate::tenant::segment(&bot_label(bot))
        ))
        .await?;
    let started: SessionView = client
        .post(
            &format!("{base}/sessions/{provider}/start"),
            &serde_json::json!({}),
        )
        .await?;
    let terminal = std::io::stdout().is_terminal() && out.format == crate::cli::OutputFormat::Table;
    let mut drawn_lines = 0usize;
    let mut last_qr: Option<String> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut view = started;
    loop {
        if view.provider == provider {
            if let Some(qr) = view.qr.clone().filter(|qr| Some(qr) != last_qr.as_ref()) {
                drawn_lines = draw(&qr, invert, terminal, drawn_lines, &view)?;
                last_qr = Some(qr);
            } else if terminal {
                status_line(&view);
            }
            match view.state.as_str() {
                "ready" => {
                    if terminal {
                        eprintln!();
                    }
                    let phone = view
                        .phone
                        .clone()
                        .unwrap_or_else(|| "(number not reported)".into());
                    return out.print(&view, || {
                        format!("paired: {} {} is ready on {phone}", view.bot, view.provider)
                    });
                }
                "failed" | "logged_out" => {
                    return Err(CliError::new(
                        Failure::Daemon,
                        format!(
                            "pairing of {} {} ended: {}{}",
                            view.bot,
                            view.provider,
                            view.state,
                            view.reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ),
                    ));
                }
                _ => {}
            }
        }
        let next = tokio::time::timeout_at(deadline, stream.next::<SessionView>()).await;
        view = match next {
            Err(_) => {
                return Err(CliError::new(
                    Failure::Daemon,
                    format!(
                        "the phone was not paired within {timeout} s (last state: {})",
                        view.state
                    ),
                ));
            }
            Ok(next) => match next? {
                Some(view) => view,
                None => {
                    return Err(CliError::new(
                        Failure::Daemon,
                        "dashd closed the session stream (shutting down?)",
                    ));
                }
            },
        };
    }
}

fn status_line(view: &SessionView) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(
        stderr,
        "\r\x1b[2K{} {}: {}{}",
        view.bot,
        view.provider,
        view.state,
        view.reason
            .as_deref()
            .map(|r| format!(" ({})", sanitize(r)))
            .unwrap_or_default()
    );
    let _ = stderr.flush();
}

/// Draws a QR code; returns the number of lines it took (to move back over them when
/// the next one comes). Without a terminal it prints the payload as one line.
fn draw(
    qr: &str,
    invert: bool,
    terminal: bool,
    previous_lines: usize,
    view: &SessionView,
) -> CliResult<usize> {
    let mut stdout = std::io::stdout().lock();
    if !terminal {
        let _ = writeln!(stdout, "qr: {}", sanitize(qr));
        return Ok(0);
    }
    let text = render(qr, invert)?;
    if previous_lines > 0 {
        // Back to the top of the previous code and clear to the end of the screen.
        let _ = write!(stdout, "\r\x1b[{previous_lines}A\x1b[J");
    }
    let header = format!(
        "Scan with WhatsApp on the phone of {} (Linked devices > Link a device):",
        view.bot
    );
    let _ = writeln!(stdout, "{header}\n{text}");
    let _ = stdout.flush();
    Ok(text.lines().count() + 2)
}

/// The QR code as Unicode half-blocks with its quiet zone. By default drawn for a dark
/// terminal (light modules on dark, which phones read as the usual dark-on-light once
/// the quiet zone is light); `invert` for light themes.
pub fn render(payload: &str, invert: bool) -> CliResult<String> {
    let code = QrCode::new(payload.as_bytes()).map_err(|err| {
        CliError::new(Failure::Daemon, format!("cannot draw this QR code: {err}"))
    })?;
    let (dark, light) = if invert {
        (Dense1x2::Dark, Dense1x2::Light)
    } else {
        (Dense1x2::Light, Dense1x2::Dark)
    };
    Ok(code
        .render::<Dense1x2>()
        .dark_color(dark)
        .light_color(light)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrcode::Color;

    /// Reads half-block art back into modules (true = dark module).
    fn modules(art: &str, invert: bool) -> Vec<Vec<bool>> {
        let mut rows: Vec<Vec<bool>> = Vec::new();
        for line in art.lines() {
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for ch in line.chars() {
                // Which halves are drawn with the terminal's foreground colour.
                let (up, down) = match ch {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    ' ' => (false, false),
                    other => panic!("unexpected {other:?}"),
                };
                // Default rendering draws light modules in the foreground.
                top.push(if invert { up } else { !up });
                bottom.push(if invert { down } else { !down });
            }
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    #[test]
    fn the_drawn_code_is_the_payloads_code_with_its_quiet_zone() {
        let payload = "2@y8eK+bjtEjUWy9/FOM,0CRFm3c1XnkL5HaYdR8IG3RX4y4wRLRNxPvrS4u5yDA=,Tx6b8qkuW2UGxOBcPjC6W1tRHJdR2PPHkrsXpTo6+ng=,3vt1uJb2YH5M1fQj0Sd5D2vt2ngzHD5Yv0vN7yR3SGY=,1";
        for invert in [false, true] {
            let art = render(payload, invert).unwrap();
            let drawn = modules(&art, invert);
            let code = QrCode::new(payload.as_bytes()).unwrap();
            let width = code.width();
            let colors = code.to_colors();
            let quiet = (drawn[0].len() - width) / 2;
            assert!(quiet >= 4, "quiet zone of {quiet} modules");
            for y in 0..width {
                for x in 0..width {
                    let expected = colors[y * width + x] == Color::Dark;
                    assert_eq!(drawn[y + quiet][x + quiet], expected, "module ({x},{y})");
                }
            }
            // The quiet zone is light all round.
            assert!(drawn[0].iter().all(|dark| !dark));
            // Fits an 80-column terminal.
            assert!(
                art.lines().all(|l| l.chars().count() <= 80),
                "{}",
                art.lines().next().unwrap().chars().count()
            );
        }
    }
}
