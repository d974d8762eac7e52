//! `dashctl session list|show|pair|logout|restart|watch`: the paired WhatsApp Web
//! sessions of the bridge providers. `pair` draws the QR code in the terminal as Unicode
//! half-blocks (two modules per character cell, quiet zone included), redraws it in place
//! when the library rotates it, and ends with the paired phone number.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dash_core::BotRef;
use dash_core::api::{ChainView, SessionView};
use dash_core::provider::ProviderKind;
use indicatif::ProgressBar;
use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, QrCode};

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
            pairing_code,
            png,
            timeout,
        } => {
            let pairing_phone = match pairing_code.as_deref() {
                Some(phone) => Some(pairing_phone(phone)?),
                None => None,
            };
            let provider = bridge_of(client, &bot, provider.as_deref()).await?;
            let options = PairOptions {
                invert,
                pairing_phone,
                png,
                timeout,
            };
            pair(client, out, &bot, &provider, options).await
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
                    &format!("{}/sessions/{provider}/restart", bot_path(&bot)),
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
            Ok(kind) if kind.is_paired() => Ok(kind.as_str().to_owned()),
            _ => Err(CliError::new(
                Failure::Invalid,
                format!(
                    "{} has no sessions to pair: use baileys, venom, wwebjs or evolution",
                    sanitize(name)
                ),
            )),
        };
    }
    let chain: ChainView = client.get(&format!("{}/chain", bot_path(bot))).await?;
    chain
        .chain
        .iter()
        .find(|name| name.parse::<ProviderKind>().is_ok_and(ProviderKind::is_paired))
        .cloned()
        .ok_or_else(|| {
            CliError::new(
                Failure::Invalid,
                format!(
                    "{}'s chain ({}) has no provider paired by QR code: add baileys, venom, wwebjs or evolution (dashctl chain set), or give --provider",
                    chain.bot,
                    chain.chain.join(",")
                ),
            )
        })
}

/// `--pairing-code +PHONE`: the number in E.164, as dashd takes it.
fn pairing_phone(given: &str) -> CliResult<String> {
    let digits: String = given
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = digits.strip_prefix('+').unwrap_or(&digits);
    if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("+{digits}"))
    } else {
        Err(CliError::new(
            Failure::Invalid,
            format!(
                "--pairing-code takes the phone's number with its country code (+15551234567), not {}",
                sanitize(given)
            ),
        ))
    }
}

fn show(view: &SessionView) -> String {
    let mut text = details(&[
        ("bot", view.bot.clone()),
        ("provider", view.provider.clone()),
        ("session", view.session.clone()),
        ("state", view.state.clone()),
        ("phone", view.phone.clone().unwrap_or_else(|| "-".into())),
        (
            "pairing code",
            view.pairing_code.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "qr expires",
            view.qr_expires_at.as_ref().map_or_else(|| "-".into(), time),
        ),
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

/// What `session pair` was asked for.
struct PairOptions {
    invert: bool,
    pairing_phone: Option<String>,
    png: Option<PathBuf>,
    timeout: u64,
}

/// Starts the session and follows it until it is ready (exit 0, with the phone), fails
/// or is logged out (exit 1), or `timeout` seconds pass (exit 1). QR codes are drawn as
/// they come; on a terminal each replaces the one before, under a spinner with the state.
async fn pair(
    client: &Client,
    out: Output,
    bot: &BotRef,
    provider: &str,
    options: PairOptions,
) -> CliResult {
    let base = bot_path(bot);
    // The stream first, so no change between the start and the watch is missed.
    let mut stream = client
        .stream(&format!(
            "/v1/sessions/stream?bot={}",
            crate::tenant::segment(&bot_label(bot))
        ))
        .await?;
    let body = match &options.pairing_phone {
        Some(phone) => serde_json::json!({ "pairing_phone": phone }),
        None => serde_json::json!({}),
    };
    let started: SessionView = client
        .post(&format!("{base}/sessions/{provider}/start"), &body)
        .await?;
    let terminal = std::io::stdout().is_terminal() && out.format == crate::cli::OutputFormat::Table;
    let spinner = terminal.then(|| {
        let spinner = ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    });
    let mut screen = Screen {
        terminal,
        invert: options.invert,
        drawn_lines: 0,
        spinner,
    };
    let mut last_qr: Option<String> = None;
    let mut last_code: Option<String> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(options.timeout);
    let mut view = started;
    loop {
        if view.provider == provider {
            if let Some(code) = view
                .pairing_code
                .clone()
                .filter(|code| Some(code) != last_code.as_ref())
            {
                screen.pairing_code(&code, &view);
                last_code = Some(code);
            }
            // A QR only matters while no pairing code was asked for.
            if let Some(qr) = view
                .qr
                .clone()
                .filter(|qr| options.pairing_phone.is_none() && Some(qr) != last_qr.as_ref())
            {
                if let Some(file) = &options.png {
                    write_png(&qr, file)?;
                }
                screen.qr(&qr, &view, options.png.as_deref())?;
                last_qr = Some(qr);
            }
            screen.status(&view);
            match view.state.as_str() {
                "ready" => {
                    if view.phone.is_none() {
                        // A status check can see the session open a moment before the
                        // event that carries the number: wait a little for it.
                        view = await_phone(&mut stream, view).await;
                    }
                    screen.finish();
                    let phone = view
                        .phone
                        .clone()
                        .unwrap_or_else(|| "(number not reported)".into());
                    return out.print(&view, || {
                        format!("paired: {} {} is ready on {phone}", view.bot, view.provider)
                    });
                }
                "failed" | "logged_out" => {
                    screen.finish();
                    return Err(CliError::new(
                        Failure::Daemon,
                        format!(
                            "pairing of {} {} ended: {}{}",
                            view.bot,
                            view.provider,
                            view.state,
                            view.reason
                                .as_deref()
                                .map(|r| format!(" ({})", sanitize(r)))
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
                screen.finish();
                return Err(CliError::new(
                    Failure::Daemon,
                    format!(
                        "the phone was not paired within {} s (last state: {})",
                        options.timeout, view.state
                    ),
                ));
            }
            Ok(next) => match next? {
                Some(view) => view,
                None => {
                    screen.finish();
                    return Err(CliError::new(
                        Failure::Daemon,
                        "dashd closed the session stream (shutting down?)",
                    ));
                }
            },
        };
    }
}

/// The same session's next report with the paired number, within a few seconds; the
/// report given otherwise.
async fn await_phone(stream: &mut crate::client::EventStream, ready: SessionView) -> SessionView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(Some(next))) =
        tokio::time::timeout_at(deadline, stream.next::<SessionView>()).await
    {
        if next.provider == ready.provider && next.phone.is_some() {
            return next;
        }
    }
    ready
}

/// Where `pair` shows things: on a terminal, the QR drawn in place under a spinner;
/// otherwise plain lines (`qr: <payload>`, `pairing code: <code>`).
struct Screen {
    terminal: bool,
    invert: bool,
    /// Lines the last QR took, to move back over them when the next one comes.
    drawn_lines: usize,
    spinner: Option<ProgressBar>,
}

impl Screen {
    fn status(&self, view: &SessionView) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message(format!(
                "{} {}: {}{}",
                view.bot,
                view.provider,
                view.state,
                view.reason
                    .as_deref()
                    .map(|r| format!(" ({})", sanitize(r)))
                    .unwrap_or_default()
            ));
        }
    }

    /// Prints text above the spinner (or plainly without a terminal).
    fn print(&self, text: &str) {
        match &self.spinner {
            Some(spinner) => spinner.suspend(|| {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{text}");
                let _ = stdout.flush();
            }),
            None => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{text}");
                let _ = stdout.flush();
            }
        }
    }

    fn pairing_code(&mut self, code: &str, view: &SessionView) {
        let code = sanitize(code);
        if self.terminal {
            self.print(&format!(
                "On the phone of {}: WhatsApp > Linked devices > Link a device > Link with phone number instead, and type:\n\n    {code}\n",
                view.bot
            ));
        } else {
            self.print(&format!("pairing code: {code}"));
        }
    }

    fn qr(&mut self, qr: &str, view: &SessionView, png: Option<&Path>) -> CliResult {
        let written = png
            .map(|file| format!(" (also in {})", file.display()))
            .unwrap_or_default();
        if !self.terminal {
            self.print(&format!("qr: {}", sanitize(qr)));
            if let Some(file) = png {
                self.print(&format!("qr png: {}", file.display()));
            }
            return Ok(());
        }
        let text = render(qr, self.invert)?;
        let header = format!(
            "Scan with WhatsApp on the phone of {} (Linked devices > Link a device){written}:",
            view.bot
        );
        let previous = self.drawn_lines;
        let draw = || {
            let mut stdout = std::io::stdout().lock();
            if previous > 0 {
                // Back to the top of the previous code and clear to the end of the screen.
                let _ = write!(stdout, "\r\x1b[{previous}A\x1b[J");
            }
            let _ = writeln!(stdout, "{header}\n{text}");
            let _ = stdout.flush();
        };
        match &self.spinner {
            Some(spinner) => spinner.suspend(draw),
            None => draw(),
        }
        self.drawn_lines = text.lines().count() + 1;
        Ok(())
    }

    fn finish(&self) {
        if let Some(spinner) = &self.spinner {
            spinner.finish_and_clear();
        }
    }
}

/// Pixels per QR module in `--png` pictures.
const PNG_SCALE: usize = 8;
/// Light modules around the code, as the QR standard asks.
const PNG_QUIET_ZONE: usize = 4;

/// The QR code as a black-on-white greyscale PNG (quiet zone included).
pub fn png_bytes(payload: &str) -> CliResult<Vec<u8>> {
    let code = QrCode::new(payload.as_bytes()).map_err(|err| {
        CliError::new(Failure::Daemon, format!("cannot draw this QR code: {err}"))
    })?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * PNG_QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x, y) = (i % width + PNG_QUIET_ZONE, i / width + PNG_QUIET_ZONE);
        for row in y * PNG_SCALE..(y + 1) * PNG_SCALE {
            pixels[row * side + x * PNG_SCALE..row * side + (x + 1) * PNG_SCALE].fill(0);
        }
    }
    let side = u32::try_from(side)
        .map_err(|_| CliError::new(Failure::Daemon, "this QR code is too large to draw"))?;
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .map_err(|err| CliError::new(Failure::Daemon, format!("cannot encode the PNG: {err}")))?;
    Ok(bytes)
}

/// Writes the QR as a PNG, replacing the file through a temporary one beside it (a
/// viewer never reads half a picture).
fn write_png(payload: &str, file: &Path) -> CliResult {
    let bytes = png_bytes(payload)?;
    let partial = file.with_extension("png.partial");
    std::fs::write(&partial, &bytes)
        .and_then(|()| std::fs::rename(&partial, file))
        .map_err(|err| {
            CliError::new(
                Failure::Invalid,
                format!("cannot write {}: {err}", file.display()),
            )
        })
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

    #[test]
    fn the_png_is_the_payloads_code_black_on_white_with_its_quiet_zone() {
        let payload = "2@y8eK+bjtEjUWy9/FOM,0CRFm3c1XnkL5HaYdR8IG3RX4y4wRLRNxPvrS4u5yDA=,1";
        let bytes = png_bytes(payload).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Grayscale);
        let code = QrCode::new(payload.as_bytes()).unwrap();
        let width = code.width();
        let side = frame.width as usize;
        assert_eq!(side, (width + 2 * PNG_QUIET_ZONE) * PNG_SCALE);
        let colors = code.to_colors();
        // Sample the centre of every module, the quiet zone included.
        let modules = width + 2 * PNG_QUIET_ZONE;
        for my in 0..modules {
            for mx in 0..modules {
                let pixel = pixels
                    [(my * PNG_SCALE + PNG_SCALE / 2) * side + mx * PNG_SCALE + PNG_SCALE / 2];
                let inside = |m: usize| (PNG_QUIET_ZONE..PNG_QUIET_ZONE + width).contains(&m);
                let dark = inside(mx)
                    && inside(my)
                    && colors[(my - PNG_QUIET_ZONE) * width + mx - PNG_QUIET_ZONE] == Color::Dark;
                assert_eq!(pixel, if dark { 0 } else { 255 }, "module ({mx},{my})");
            }
        }
    }

    #[test]
    fn pairing_phones_are_numbers_with_their_country_code() {
        assert_eq!(pairing_phone("+1 555 123-4567").unwrap(), "+15551234567");
        assert_eq!(pairing_phone("5531982968").unwrap(), "+5531982968");
        for bad in ["", "+", "abc", "+12", "+1234567890123456", "+1555ABC4567"] {
            assert!(pairing_phone(bad).is_err(), "{bad}");
        }
    }
}
