//! The `evolution` provider: Evolution API v2 (a self-hosted server holding WhatsApp Web
//! sessions, one per instance). Every call carries `apikey: <api_key>` and names the
//! instance in its path (`/message/sendText/{instance}`).
//!
//! Sending: text (`sendText`), media by URL (`sendMedia`), locations (`sendLocation`),
//! reactions (`sendReaction`) and read receipts (`chat/markMessageAsRead`). Menus go out
//! as numbered text through `sendText` unless the chain entry's `interactive` setting is
//! `true`: Evolution's `sendButtons`/`sendList` produce WhatsApp Web interactive messages
//! that WhatsApp clients no longer render reliably, and no Evolution endpoint tells
//! whether an instance's recipients will see them (the instance's connection state says
//! nothing of it), so only the operator, who can try, opts in. With it on, a menu that
//! fits goes out as reply buttons or a list ([`menu_payload`]), anything else still as
//! numbered text. Templates exist only on Cloud API instances and are refused.
//!
//! Webhooks: Evolution does not sign them. The instance's webhook is set with a custom
//! header `X-Dashd-Token: <webhook_token>` ([`webhook_set_body`]), compared in constant
//! time before anything is parsed.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dash_core::api::{Attachment, Choice, Location, MessageBody, SharedContact};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use super::bridge::jid::Jid;
use super::bridge::{SessionQr, SessionStatus, address_of, media_kind_name, unix_seconds};
use super::signature;
use super::{
    ConfigError, ContactIds, Content, DEFAULT_LIST_BUTTON, DeliveryStatus, MediaSource,
    OutboundMessage, ProbeReport, ProviderConfig, ProviderEvent, Recipient, SEND_TIMEOUT, Secret,
    SendError, SendReceipt, SessionState, WebhookError, WebhookRequest, WhatsAppProvider, excerpt,
    numbered_text,
};

/// The header Evolution is told to send with every webhook, holding `webhook_token`.
pub const TOKEN_HEADER: &str = "X-Dashd-Token";

/// The events DashOffice subscribes an instance's webhook to.
pub const WEBHOOK_EVENTS: [&str; 5] = [
    "MESSAGES_UPSERT",
    "MESSAGES_UPDATE",
    "CONNECTION_UPDATE",
    "QRCODE_UPDATED",
    "SEND_MESSAGE",
];

/// Reply buttons in one `sendButtons` message, at most (Evolution refuses more: "Maximum
/// of 3 reply buttons allowed").
const MAX_BUTTONS: usize = 3;
/// A reply button's label, in characters (WhatsApp's limit).
const BUTTON_LABEL_MAX: usize = 20;
/// Rows of one list message, at most (WhatsApp's limit).
const MAX_LIST_ROWS: usize = 10;
/// A list row's title, in characters (WhatsApp's limit).
const ROW_TITLE_MAX: usize = 24;
/// The label of the button that opens a list, in characters (WhatsApp's limit).
const LIST_BUTTON_MAX: usize = 20;

/// The exact body of `POST /webhook/set/{instance}` (Evolution 2.3's nested form) that
/// points an instance's webhook at `public_url` with the token header.
pub fn webhook_set_body(public_url: &str, token: &str) -> Value {
    json!({
        "webhook": {
            "enabled": true,
            "url": public_url,
            "headers": { TOKEN_HEADER: token },
            "byEvents": false,
            "base64": false,
            "events": WEBHOOK_EVENTS,
        }
    })
}

/// A client of one Evolution instance.
#[derive(Debug, Clone)]
pub struct Evolution {
    http: reqwest::Client,
    base_url: Url,
    instance: String,
    api_key: Secret,
    webhook_token: Option<Secret>,
    /// Menus that fit go out through `sendButtons`/`sendList` (setting `interactive`).
    interactive: bool,
}

impl Evolution {
    /// A client from the chain entry's `base_url`, `instance`, `api_key`, (for
    /// webhooks) `webhook_token` and `interactive` (`true` or `false`, the default).
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        let base_url =
            super::bridge::parse_base_url(ProviderKind::Evolution, config.required("base_url")?)?;
        // As stored: webhooks are routed to the bot by this exact name.
        let instance = config.required("instance")?.to_owned();
        let interactive = match config.setting("interactive").map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "evolution's setting interactive is true or false, not {}",
                    dash_core::validate::quoted(&dash_core::validate::bounded(other, 64))
                )));
            }
        };
        Ok(Self {
            http,
            base_url,
            instance,
            api_key: config.required_secret("api_key")?.clone(),
            // Sending works without it; webhooks are refused (NotConfigured) until set.
            webhook_token: config.secret("webhook_token").cloned(),
            interactive,
        })
    }

    /// The instance's name (its session name in `dashctl session`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The instance's current QR (`GET /instance/connect/{instance}`, with `?number=`
    /// for a pairing code): the raw QR string (`code`) and the pairing code, or None when
    /// there is none yet or the instance is already connected.
    pub async fn qr(&self) -> Result<Option<SessionQr>, SendError> {
        self.connect(None).await
    }

    async fn connect(&self, pairing_phone: Option<&str>) -> Result<Option<SessionQr>, SendError> {
        let mut url = self.url(&["instance", "connect", &self.instance]);
        if let Some(phone) = pairing_phone {
            url.query_pairs_mut().append_pair("number", phone);
        }
        let answer = self.call_url(Method::GET, url, None).await?;
        let text = |name: &str| {
            answer
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(text("code").map(|qr| SessionQr {
            qr,
            expires_at: None,
            pairing_code: text("pairingCode"),
        }))
    }

    /// The instance as a session (`GET /instance/connectionState/{instance}`): `open` is
    /// ready; `connecting` waits for a scan (`qr` once a QR exists); `close` is
    /// disconnected. An instance Evolution does not know answers the error with code 404.
    pub async fn session_status(&self) -> Result<SessionStatus, SendError> {
        let answer = self
            .call(
                Method::GET,
                &["instance", "connectionState", &self.instance],
                None,
            )
            .await?;
        let state = answer
            .pointer("/instance/state")
            .or_else(|| answer.get("state"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (state, reason) = match state.as_str() {
            "open" => (SessionState::Ready, None),
            "connecting" => match self.qr().await? {
                Some(_) => (SessionState::Qr, None),
                None => (SessionState::Initializing, None),
            },
            "close" => (
                SessionState::Disconnected,
                Some("instance closed: dashctl session pair connects it".to_owned()),
            ),
            "refused" => (SessionState::Failed, Some("refused".to_owned())),
            other => {
                return Err(SendError::broken(format!(
                    "evolution connectionState answered an unknown state {}",
                    excerpt(other)
                )));
            }
        };
        Ok(SessionStatus {
            session: self.instance.clone(),
            state,
            phone: None,
            reason,
            since: None,
            pairing_code: None,
        })
    }

    /// Starts pairing: creates the instance when Evolution does not know it (which takes
    /// the global API key), then connects it (`GET /instance/connect`, `?number=` for a
    /// pairing code). Answers the state it is then in.
    pub async fn start_session(
        &self,
        pairing_phone: Option<&str>,
    ) -> Result<SessionStatus, SendError> {
        let status = match self.session_status().await {
            Ok(status) => status,
            Err(err) if err.code.as_deref() == Some("404") => {
                let mut body = json!({
                    "instanceName": self.instance,
                    "qrcode": false,
                    "integration": "WHATSAPP-BAILEYS",
                });
                if let Some(phone) = pairing_phone {
                    body["number"] = json!(phone);
                }
                self.call(Method::POST, &["instance", "create"], Some(&body))
                    .await
                    .map_err(|err| SendError {
                        message: format!(
                            "cannot create evolution instance {}: {} (creating instances takes the global API key)",
                            self.instance, err.message
                        ),
                        ..err
                    })?;
                self.session_status().await?
            }
            Err(err) => return Err(err),
        };
        if status.state == SessionState::Ready {
            return Ok(status);
        }
        let qr = self.connect(pairing_phone).await?;
        Ok(SessionStatus {
            state: if qr.is_some() {
                SessionState::Qr
            } else {
                SessionState::Initializing
            },
            reason: None,
            pairing_code: qr.and_then(|qr| qr.pairing_code),
            ..status
        })
    }

    /// `POST /instance/restart/{instance}`: reconnects without logging out.
    pub async fn restart_session(&self) -> Result<SessionStatus, SendError> {
        self.call(Method::POST, &["instance", "restart", &self.instance], None)
            .await?;
        self.session_status().await
    }

    /// `DELETE /instance/logout/{instance}`: unpairs the phone (the instance stays). An
    /// instance Evolution does not know is already logged out.
    pub async fn logout(&self) -> Result<(), SendError> {
        match self
            .call(
                Method::DELETE,
                &["instance", "logout", &self.instance],
                None,
            )
            .await
        {
            Err(err) if err.code.as_deref() != Some("404") => Err(err),
            _ => Ok(()),
        }
    }

    /// Points the instance's webhook at `public_url` (`POST /webhook/set/{instance}`
    /// with [`webhook_set_body`] and this entry's `webhook_token`).
    pub async fn set_webhook(&self, public_url: &str) -> Result<(), SendError> {
        let token = self.webhook_token.as_ref().ok_or_else(|| {
            SendError::broken("evolution needs the secret webhook_token before its webhook is set")
        })?;
        let body = webhook_set_body(public_url, token.expose());
        self.call(
            Method::POST,
            &["webhook", "set", &self.instance],
            Some(&body),
        )
        .await?;
        Ok(())
    }

    fn url(&self, segments: &[&str]) -> Url {
        super::join_url(&self.base_url, segments)
    }

    /// One call: `apikey` header, JSON body, time bound. A 2xx answer's JSON (Null when
    /// empty or not JSON), or the classified failure.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, SendError> {
        self.call_url(method, self.url(segments), body).await
    }

    async fn call_url(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, SendError> {
        let mut request = self
            .http
            .request(method, url)
            .header("apikey", self.api_key.expose())
            .timeout(SEND_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| SendError::transport(&err))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|err| SendError::transport(&err))?;
        if !status.is_success() {
            return Err(classify(status, &text));
        }
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // Some controllers answer 200 with `{"error": true, "message": ...}`.
        if answer.get("error") == Some(&Value::Bool(true)) {
            return Err(classify(status, &text));
        }
        Ok(answer)
    }

    /// Sends through `/message/{endpoint}/{instance}` and reads the message id.
    async fn send_message(&self, endpoint: &str, body: &Value) -> Result<SendReceipt, SendError> {
        let answer = self
            .call(
                Method::POST,
                &["message", endpoint, &self.instance],
                Some(body),
            )
            .await?;
        match message_id_of(&answer) {
            Some(id) => Ok(SendReceipt {
                provider_message_id: id.to_owned(),
            }),
            None => Err(SendError::broken(format!(
                "evolution {endpoint} answered without key.id: {}",
                excerpt(&answer.to_string())
            ))),
        }
    }
}

#[async_trait]
impl WhatsAppProvider for Evolution {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Evolution
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let to = &message.to;
        match &message.content {
            Content::Text {
                body,
                preview_url,
                reply_to,
            } => {
                let mut payload = text_payload(address_of(to)?, body)?;
                // Evolution previews links unless told not to.
                if !preview_url && has_link(body) {
                    payload["linkPreview"] = json!(false);
                }
                if let Some(reply_to) = reply_to {
                    payload["quoted"] = json!({ "key": { "id": reply_to } });
                }
                self.send_message("sendText", &payload).await
            }
            Content::Menu {
                body,
                choices,
                button,
            } => {
                let number = address_of(to)?;
                let interactive = self
                    .interactive
                    .then(|| menu_payload(&number, body, choices, button))
                    .flatten();
                match interactive {
                    Some((endpoint, payload)) => self.send_message(endpoint, &payload).await,
                    None => {
                        let payload = text_payload(number, &numbered_text(body, choices))?;
                        self.send_message("sendText", &payload).await
                    }
                }
            }
            Content::Media {
                kind,
                source,
                caption,
                filename,
            } => {
                let MediaSource::Link(url) = source else {
                    return Err(SendError::permanent(
                        "evolution sends media by URL only, not by a provider media id",
                    ));
                };
                let mut payload = json!({
                    "number": address_of(to)?,
                    "mediatype": media_kind_name(*kind),
                    "media": url,
                });
                if let Some(caption) = caption.as_ref().filter(|c| !c.is_empty()) {
                    payload["caption"] = json!(caption);
                }
                let filename = filename
                    .clone()
                    .filter(|f| !f.is_empty())
                    .or_else(|| filename_of(url));
                if let Some(filename) = filename {
                    payload["fileName"] = json!(filename);
                }
                self.send_message("sendMedia", &payload).await
            }
            Content::Location(location) => {
                // Evolution's schema requires name and address.
                let payload = json!({
                    "number": address_of(to)?,
                    "latitude": location.latitude,
                    "longitude": location.longitude,
                    "name": location.name.clone().unwrap_or_default(),
                    "address": location.address.clone().unwrap_or_default(),
                });
                self.send_message("sendLocation", &payload).await
            }
            // Reactions and read receipts name the customer's message (fromMe false).
            Content::Reaction { message_id, emoji } => {
                let payload = json!({
                    "key": { "remoteJid": jid_of(to)?, "fromMe": false, "id": message_id },
                    "reaction": emoji,
                });
                self.send_message("sendReaction", &payload).await
            }
            Content::MarkRead { message_id } => {
                let payload = json!({
                    "readMessages": [
                        { "remoteJid": jid_of(to)?, "fromMe": false, "id": message_id }
                    ]
                });
                self.call(
                    Method::POST,
                    &["chat", "markMessageAsRead", &self.instance],
                    Some(&payload),
                )
                .await?;
                // The answer is `{"message": "Read messages", "read": "success"}`: the
                // receipt names the message marked read.
                Ok(SendReceipt {
                    provider_message_id: message_id.clone(),
                })
            }
            Content::Template { .. } => Err(SendError::permanent(
                "evolution: templates are only sent by WhatsApp Cloud API instances; this provider does not send them",
            )),
        }
    }

    fn parse_webhook(
        &self,
        request: &WebhookRequest<'_>,
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        let expected = self.webhook_token.as_ref().ok_or_else(|| {
            WebhookError::NotConfigured(
                "evolution needs the secret webhook_token (sent by Evolution as X-Dashd-Token)"
                    .into(),
            )
        })?;
        let given = request
            .headers
            .get(TOKEN_HEADER)
            .ok_or_else(|| WebhookError::Signature(format!("missing {TOKEN_HEADER}")))?;
        // Digests first, so the comparison takes the same time whatever the lengths.
        if !signature::equal(
            signature::sha256_hex(given.as_bytes()).as_bytes(),
            signature::sha256_hex(expected.expose().as_bytes()).as_bytes(),
        ) {
            return Err(WebhookError::Signature(format!("wrong {TOKEN_HEADER}")));
        }

        let envelope: Value = serde_json::from_slice(request.body).map_err(|err| {
            WebhookError::Malformed(format!("evolution webhook is not JSON: {err}"))
        })?;
        // With `byEvents` the URL ends in `/messages-upsert`...; the body's event wins.
        let event = envelope
            .get("event")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                request
                    .path
                    .rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .map(|event| event_name(&event))
            .ok_or_else(|| WebhookError::Malformed("evolution webhook without event".into()))?;
        let instance = envelope
            .get("instance")
            .and_then(Value::as_str)
            .unwrap_or(&self.instance);
        if instance != self.instance {
            return Ok(vec![ProviderEvent::Ignored {
                kind: format!("evolution {event} for another instance"),
            }]);
        }
        let data = envelope.get("data").unwrap_or(&Value::Null);
        let now = request.now;
        let items = || match data {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        };
        match event.as_str() {
            "messages.upsert" => items()
                .into_iter()
                .map(|item| inbound_event(item, now))
                .collect(),
            "messages.update" => items()
                .into_iter()
                .map(|item| status_event(item, now))
                .collect(),
            "connection.update" => Ok(vec![connection_event(instance, data, now)]),
            "qrcode.updated" => Ok(vec![qr_event(instance, data, now)?]),
            // `send.message` echoes what we sent through the API.
            other => Ok(vec![ProviderEvent::Ignored {
                kind: format!("evolution {other}"),
            }]),
        }
    }

    async fn probe(&self) -> Result<ProbeReport, SendError> {
        let answer = self
            .call(
                Method::GET,
                &["instance", "connectionState", &self.instance],
                None,
            )
            .await?;
        let state = answer
            .pointer("/instance/state")
            .or_else(|| answer.get("state"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                SendError::broken(format!(
                    "evolution connectionState answered without a state: {}",
                    excerpt(&answer.to_string())
                ))
            })?;
        if state == "open" {
            return Ok(ProbeReport {
                detail: format!("evolution instance {} open", self.instance),
            });
        }
        Err(SendError::broken(format!(
            "evolution instance {} is {state}, not open",
            self.instance
        ))
        .with_code(state))
    }
}

/// `{number, text}`, refusing empty text (Evolution answers 400 "Text is required").
fn text_payload(number: String, text: &str) -> Result<Value, SendError> {
    if text.trim().is_empty() {
        return Err(SendError::permanent("empty text message"));
    }
    Ok(json!({ "number": number, "text": text }))
}

/// A menu as Evolution's reply buttons (`sendButtons`, 1 to 3 choices whose labels fit a
/// button) or, failing that, a list (`sendList`, up to 10 choices whose labels fit a
/// row): the endpoint and its body. None, for numbered text, when the menu fits neither,
/// has no body text (both messages need a title), or has an empty or repeated id (the
/// reply could not be told apart), or repeated button labels.
///
/// The bodies are Evolution API 2.3's (EvolutionAPI/evolution-api):
/// `SendButtonsDto`/`SendListDto` in src/api/dto/sendMessage.dto.ts,
/// `buttonsMessageSchema`/`listMessageSchema` in src/validate/message.schema.ts (which
/// requires `footerText` and refuses an empty row `description`), and `buttonMessage`/
/// `listMessage` in src/api/integrations/channel/whatsapp/whatsapp.baileys.service.ts.
/// Evolution shows a button message's `title` in bold above its `description`, and a
/// list's `title` as its header, so the body's first line is the title and the rest the
/// description. Replies come back as `interactiveResponseMessage` (buttons, sent as
/// native-flow `quick_reply`), `buttonsResponseMessage` or `listResponseMessage`, read by
/// [`body_of`] into `reply_id`.
fn menu_payload(
    number: &str,
    body: &str,
    choices: &[Choice],
    button: &str,
) -> Option<(&'static str, Value)> {
    let (title, description) = title_and_description(body)?;
    if choices.is_empty()
        || choices.iter().any(|choice| choice.id.trim().is_empty())
        || !distinct(choices.iter().map(|choice| choice.id.as_str()))
    {
        return None;
    }
    let labels_within = |max: usize| {
        choices
            .iter()
            .all(|choice| !choice.label.trim().is_empty() && choice.label.chars().count() <= max)
    };
    let (endpoint, mut payload) = if choices.len() <= MAX_BUTTONS
        && labels_within(BUTTON_LABEL_MAX)
        // Buttons with the same label cannot be told apart (Evolution refused them too).
        && distinct(choices.iter().map(|choice| choice.label.as_str()))
    {
        let buttons: Vec<Value> = choices
            .iter()
            .map(|choice| json!({ "type": "reply", "displayText": choice.label, "id": choice.id }))
            .collect();
        (
            "sendButtons",
            json!({ "number": number, "title": title, "buttons": buttons }),
        )
    } else if choices.len() <= MAX_LIST_ROWS && labels_within(ROW_TITLE_MAX) {
        let button = list_button(button);
        let rows: Vec<Value> = choices
            .iter()
            .map(|choice| json!({ "title": choice.label, "rowId": choice.id }))
            .collect();
        (
            "sendList",
            json!({
                "number": number,
                "title": title,
                "buttonText": button,
                "footerText": "",
                "sections": [{ "title": button, "rows": rows }],
            }),
        )
    } else {
        return None;
    };
    if let Some(description) = description {
        payload["description"] = json!(description);
    }
    Some((endpoint, payload))
}

/// A menu body's first line (the title) and the rest (the description, if any), both
/// trimmed; None for a blank body.
fn title_and_description(body: &str) -> Option<(&str, Option<&str>)> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let (title, rest) = body.split_once('\n').unwrap_or((body, ""));
    let rest = rest.trim();
    Some((title.trim(), (!rest.is_empty()).then_some(rest)))
}

/// The label of the button that opens a list: the menu's, cut to 20 characters, or the
/// default.
fn list_button(button: &str) -> String {
    let button = match button.trim() {
        "" => DEFAULT_LIST_BUTTON,
        button => button,
    };
    button
        .chars()
        .take(LIST_BUTTON_MAX)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

fn distinct<'a>(mut items: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = BTreeSet::new();
    items.all(|item| seen.insert(item))
}

/// The recipient's JID for calls that take a message key: `<digits>@s.whatsapp.net`, or
/// the LID JID.
fn jid_of(to: &Recipient) -> Result<String, SendError> {
    let address = address_of(to)?;
    Ok(if address.contains('@') {
        address
    } else {
        format!("{address}@s.whatsapp.net")
    })
}

fn has_link(text: &str) -> bool {
    text.contains("http://") || text.contains("https://")
}

/// The last path segment of a media URL, when it looks like a file name.
fn filename_of(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    let name = url.path_segments()?.next_back()?;
    (name.contains('.') && name.len() > 2).then(|| name.to_owned())
}

/// The message id of a send answer: `key.id` at the top (both documented shapes), or
/// inside `data`/`message`, or in the first element of an array.
fn message_id_of(answer: &Value) -> Option<&str> {
    ["/key/id", "/data/key/id", "/message/key/id", "/0/key/id"]
        .iter()
        .find_map(|pointer| answer.pointer(pointer).and_then(Value::as_str))
        .filter(|id| !id.is_empty())
}

/// `MESSAGES_UPSERT`, `messages-upsert` and `messages.upsert` all name one event.
fn event_name(raw: &str) -> String {
    raw.trim().to_ascii_lowercase().replace(['_', '-'], ".")
}

/// How an Evolution error answer is treated. Its body is
/// `{"status", "error", "response": {"message": [...] | "..."}}`.
fn classify(status: StatusCode, text: &str) -> SendError {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let detail = parsed
        .as_ref()
        .and_then(error_detail)
        .unwrap_or_else(|| excerpt(text));
    let lower = detail.to_lowercase();
    let not_on_whatsapp = parsed.as_ref().is_some_and(has_false_exists);
    let disconnected = [
        "connection closed",
        "connection terminated",
        "not connected",
        "no connection",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase));
    let code = status.as_u16();
    let (class, what) = if disconnected {
        (ErrorClass::ProviderBroken, "instance not connected")
    } else {
        match code {
            401 | 403 => (ErrorClass::ProviderBroken, "refused the api key"),
            404 => (ErrorClass::ProviderBroken, "instance or route not found"),
            408 | 429 => (ErrorClass::Retryable, "asked to retry"),
            400 if not_on_whatsapp => (ErrorClass::Permanent, "recipient is not on WhatsApp"),
            _ if lower.contains("timed out") => (ErrorClass::Retryable, "timed out"),
            400..=499 => (ErrorClass::Permanent, "refused the message"),
            200..=299 => (ErrorClass::ProviderBroken, "reported an error"),
            _ => (ErrorClass::Retryable, "failed"),
        }
    };
    SendError {
        class,
        code: Some(code.to_string()),
        message: format!("evolution {what} (HTTP {code}): {detail}"),
    }
}

/// The reason in an error body: `response.message` (a string, or a list of strings and
/// objects), else `message`, else `error`; one line.
fn error_detail(body: &Value) -> Option<String> {
    let message = body
        .pointer("/response/message")
        .or_else(|| body.get("message"))
        .or_else(|| body.get("error").filter(|e| e.is_string()))?;
    let text = match message {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    let text = excerpt(&text);
    (!text.is_empty()).then_some(text)
}

/// Whether an error body holds `"exists": false` (Evolution's answer for a number that
/// is not on WhatsApp: `{"jid", "exists": false, "number"}`).
fn has_false_exists(value: &Value) -> bool {
    match value {
        Value::Object(map) => {
            map.get("exists") == Some(&Value::Bool(false)) || map.values().any(has_false_exists)
        }
        Value::Array(items) => items.iter().any(has_false_exists),
        _ => false,
    }
}

/// `messages.upsert`: one Baileys WebMessageInfo as Evolution's `prepareMessage` shapes it.
fn inbound_event(data: &Value, now: DateTime<Utc>) -> Result<ProviderEvent, WebhookError> {
    let key = data
        .get("key")
        .filter(|k| k.is_object())
        .ok_or_else(|| WebhookError::Malformed("evolution message without key".into()))?;
    let key_text = |name: &str| {
        key.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let remote_jid = key_text("remoteJid")
        .ok_or_else(|| WebhookError::Malformed("evolution message without key.remoteJid".into()))?;
    let chat = Jid::parse(remote_jid);
    if !chat.is_person() {
        return Ok(ProviderEvent::Ignored {
            kind: format!("evolution messages.upsert ({})", chat.kind_name(false)),
        });
    }
    let id = key_text("id")
        .ok_or_else(|| WebhookError::Malformed("evolution message without key.id".into()))?;
    let from_me = key.get("fromMe").and_then(Value::as_bool).unwrap_or(false);
    let Some(message) = data.get("message").filter(|m| m.is_object()) else {
        return Ok(ProviderEvent::Ignored {
            kind: "evolution messages.upsert without content".into(),
        });
    };

    let mut from = ContactIds::default();
    chat.fill(&mut from);
    // Baileys 7 gives the other addressing in remoteJidAlt; Baileys 6 the phone in senderPn.
    for alternative in ["remoteJidAlt", "senderPn"] {
        if let Some(jid) = key_text(alternative) {
            Jid::parse(jid).fill(&mut from);
        }
    }
    let push_name = data
        .get("pushName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if !from_me {
        from.name = push_name.clone();
    }

    let mut body = body_of(message, id);
    if body.text.is_empty()
        && body.attachment.is_none()
        && body.location.is_none()
        && body.contacts.is_empty()
    {
        let kind = data
            .get("messageType")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Ok(ProviderEvent::Ignored {
            kind: format!("evolution messages.upsert {kind}"),
        });
    }
    if !from_me {
        body.name = push_name;
    }
    Ok(ProviderEvent::Inbound {
        from,
        provider_message_id: id.to_owned(),
        body,
        at: unix_seconds(data.get("messageTimestamp")).unwrap_or(now),
        from_me,
    })
}

/// A Baileys `Message` as a normalised body: text, media (as an attachment referenced by
/// its URL, or the message id), interactive replies, a location, contact cards.
fn body_of(message: &Value, id: &str) -> MessageBody {
    let text_at = |pointer: &str| {
        message
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let mut body = MessageBody {
        text: text_at("/conversation")
            .or_else(|| text_at("/extendedTextMessage/text"))
            .unwrap_or_default(),
        ..MessageBody::default()
    };

    let media_kinds = [
        ("imageMessage", MediaKind::Image),
        ("videoMessage", MediaKind::Video),
        ("ptvMessage", MediaKind::Video),
        ("audioMessage", MediaKind::Audio),
        ("documentMessage", MediaKind::Document),
        ("stickerMessage", MediaKind::Image),
    ];
    let media = media_kinds
        .iter()
        .find_map(|(name, kind)| message.get(*name).map(|m| (m, *kind)))
        .or_else(|| {
            message
                .pointer("/documentWithCaptionMessage/message/documentMessage")
                .map(|m| (m, MediaKind::Document))
        });
    if let Some((media, kind)) = media {
        let field = |name: &str| {
            media
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let caption = field("caption");
        if body.text.is_empty()
            && let Some(caption) = &caption
        {
            body.text = caption.clone();
        }
        body.attachment = Some(Attachment {
            kind,
            // An S3 copy when Evolution stores media, else WhatsApp's (encrypted) URL,
            // else the message id (Evolution's getBase64FromMediaMessage takes it).
            reference: text_at("/mediaUrl")
                .or_else(|| field("url"))
                .unwrap_or_else(|| id.to_owned()),
            mime_type: field("mimetype"),
            caption,
            filename: field("fileName"),
        });
    }

    let replies = [
        (
            "/buttonsResponseMessage/selectedButtonId",
            "/buttonsResponseMessage/selectedDisplayText",
        ),
        (
            "/listResponseMessage/singleSelectReply/selectedRowId",
            "/listResponseMessage/title",
        ),
        (
            "/templateButtonReplyMessage/selectedId",
            "/templateButtonReplyMessage/selectedDisplayText",
        ),
    ];
    for (id_pointer, text_pointer) in replies {
        if let Some(reply_id) = text_at(id_pointer) {
            body.reply_id = Some(reply_id);
            if body.text.is_empty() {
                body.text = text_at(text_pointer).unwrap_or_default();
            }
            break;
        }
    }
    if body.reply_id.is_none()
        && let Some(params) =
            text_at("/interactiveResponseMessage/nativeFlowResponseMessage/paramsJson")
    {
        body.reply_id = serde_json::from_str::<Value>(&params)
            .ok()
            .and_then(|p| p.get("id").and_then(Value::as_str).map(str::to_owned));
        if body.text.is_empty() {
            body.text = text_at("/interactiveResponseMessage/body/text").unwrap_or_default();
        }
    }

    let location = message
        .get("locationMessage")
        .or_else(|| message.get("liveLocationMessage"));
    if let Some(location) = location {
        let number = |name: &str| location.get(name).and_then(Value::as_f64);
        let text = |name: &str| {
            location
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if let (Some(latitude), Some(longitude)) =
            (number("degreesLatitude"), number("degreesLongitude"))
        {
            body.location = Some(Location {
                latitude,
                longitude,
                name: text("name"),
                address: text("address"),
            });
        }
    }

    let cards: Vec<&Value> = match message.get("contactMessage") {
        Some(card) => vec![card],
        None => message
            .pointer("/contactsArrayMessage/contacts")
            .and_then(Value::as_array)
            .map(|cards| cards.iter().collect())
            .unwrap_or_default(),
    };
    body.contacts = cards
        .into_iter()
        .map(|card| SharedContact {
            name: card
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            phones: card
                .get("vcard")
                .and_then(Value::as_str)
                .map(vcard_phones)
                .unwrap_or_default(),
        })
        .collect();
    body
}

/// Phone numbers of a vCard's `TEL` lines (`item1.TEL;waid=5511...:+55 11 ...`).
fn vcard_phones(vcard: &str) -> Vec<String> {
    vcard
        .lines()
        .filter(|line| {
            let name = line.split([';', ':']).next().unwrap_or_default();
            name.rsplit('.')
                .next()
                .unwrap_or_default()
                .eq_ignore_ascii_case("TEL")
        })
        .filter_map(|line| line.split_once(':').map(|(_, number)| number.trim()))
        .filter_map(super::e164)
        .collect()
}

/// `messages.update`: a delivery status of a message the instance sent.
fn status_event(data: &Value, now: DateTime<Utc>) -> Result<ProviderEvent, WebhookError> {
    let text = |name: &str| {
        data.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let message_id = text("keyId")
        .or_else(|| data.pointer("/key/id").and_then(Value::as_str))
        .ok_or_else(|| WebhookError::Malformed("evolution messages.update without keyId".into()))?;
    // Receipts of messages the customer sent (our own reads) are not delivery statuses.
    if data.get("fromMe") == Some(&Value::Bool(false)) {
        return Ok(ProviderEvent::Ignored {
            kind: "evolution messages.update of a received message".into(),
        });
    }
    let raw_status = text("status").unwrap_or("DELETED");
    let status = match raw_status {
        "SERVER_ACK" => DeliveryStatus::Sent,
        "DELIVERY_ACK" => DeliveryStatus::Delivered,
        "READ" | "PLAYED" => DeliveryStatus::Read,
        "ERROR" => DeliveryStatus::Failed,
        other => {
            return Ok(ProviderEvent::Ignored {
                kind: format!("evolution messages.update {other}"),
            });
        }
    };
    let mut recipient = ContactIds::default();
    if let Some(jid) = text("remoteJid") {
        let chat = Jid::parse(jid);
        if !chat.is_person() {
            return Ok(ProviderEvent::Ignored {
                kind: format!("evolution messages.update ({})", chat.kind_name(false)),
            });
        }
        chat.fill(&mut recipient);
    }
    Ok(ProviderEvent::Status {
        provider_message_id: message_id.to_owned(),
        status,
        error: (status == DeliveryStatus::Failed).then(|| {
            (
                "ERROR".to_owned(),
                "Evolution reported the message failed".to_owned(),
            )
        }),
        recipient,
        at: now,
    })
}

/// `connection.update`: `open` → ready, `connecting` → initializing, `close` → logged
/// out (status 401) or disconnected, `refused` (QR limit reached) → failed.
fn connection_event(instance: &str, data: &Value, now: DateTime<Utc>) -> ProviderEvent {
    let state = data
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let reason_code = data.get("statusReason").and_then(Value::as_i64);
    let session_state = match (state, reason_code) {
        ("open", _) => SessionState::Ready,
        ("connecting", _) => SessionState::Initializing,
        ("close", Some(401)) => SessionState::LoggedOut,
        ("close", _) => SessionState::Disconnected,
        ("refused", _) => SessionState::Failed,
        (other, _) => {
            return ProviderEvent::Ignored {
                kind: format!("evolution connection.update {other}"),
            };
        }
    };
    let reason = match session_state {
        SessionState::Ready | SessionState::Initializing => None,
        _ => Some(match reason_code {
            Some(code) => format!("{state}: {} ({code})", disconnect_reason(code)),
            None => state.to_owned(),
        }),
    };
    ProviderEvent::Session {
        session: instance.to_owned(),
        state: session_state,
        qr: None,
        qr_expires_at: None,
        pairing_code: None,
        phone: (session_state == SessionState::Ready)
            .then(|| {
                data.get("wuid")
                    .and_then(Value::as_str)
                    .and_then(super::e164)
            })
            .flatten(),
        reason,
        at: now,
    }
}

/// Baileys' `DisconnectReason` codes, as Evolution reports them in `statusReason`.
fn disconnect_reason(code: i64) -> &'static str {
    match code {
        401 => "logged out",
        403 => "forbidden",
        408 => "connection lost or timed out",
        411 => "multi-device mismatch",
        428 => "connection closed",
        440 => "connection replaced by another session",
        500 => "bad session",
        503 => "service unavailable",
        515 => "restart required",
        _ => "disconnected",
    }
}

/// `qrcode.updated`: a new QR (`data.qrcode.code`), or the QR limit reached.
fn qr_event(
    instance: &str,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<ProviderEvent, WebhookError> {
    if let Some(code) = data
        .pointer("/qrcode/code")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    {
        return Ok(ProviderEvent::Session {
            session: instance.to_owned(),
            state: SessionState::Qr,
            qr: Some(code.to_owned()),
            qr_expires_at: None,
            pairing_code: data
                .pointer("/qrcode/pairingCode")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            phone: None,
            reason: None,
            at: now,
        });
    }
    match data.get("message").and_then(Value::as_str) {
        Some(message) => Ok(ProviderEvent::Session {
            session: instance.to_owned(),
            state: SessionState::Failed,
            qr: None,
            qr_expires_at: None,
            pairing_code: None,
            phone: None,
            reason: Some(message.to_owned()),
            at: now,
        }),
        None => Err(WebhookError::Malformed(
            "evolution qrcode.updated without qrcode.code".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_normalise() {
        assert_eq!(event_name("messages.upsert"), "messages.upsert");
        assert_eq!(event_name("MESSAGES_UPSERT"), "messages.upsert");
        assert_eq!(event_name("messages-upsert"), "messages.upsert");
    }

    #[test]
    fn vcards_give_phones() {
        let vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Ana\nitem1.TEL;waid=5511912345678:+55 11 91234-5678\nitem1.X-ABLabel:Celular\nEND:VCARD";
        assert_eq!(vcard_phones(vcard), ["+5511912345678"]);
    }

    #[test]
    fn media_file_names_come_from_urls() {
        assert_eq!(
            filename_of("https://example.com/a/Image.png?x=1").as_deref(),
            Some("Image.png")
        );
        assert_eq!(filename_of("https://example.com/a/"), None);
        assert_eq!(filename_of("not a url"), None);
    }
}
