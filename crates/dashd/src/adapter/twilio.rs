//! The `twilio` provider: WhatsApp through Twilio Programmable Messaging (REST API
//! `2010-04-01`). Sends are form posts to the account's `Messages.json` with HTTP Basic
//! auth (account SID and auth token); webhooks (inbound messages and status callbacks,
//! both sent to the bot's `public_url`) are verified with `X-Twilio-Signature` before
//! anything in them is read.
//!
//! What Twilio cannot do for WhatsApp outside Content templates, and how it is handled:
//! menus become numbered text; media by an uploaded id, reactions and read receipts are
//! refused as permanent errors; a location is sent as `Body` + `PersistentAction=geo:...`
//! (Twilio's documented location message); `reply_to` (quoting) has no parameter and is
//! left out. Twilio takes no idempotency key for a message: a repeated call is a second
//! message.
//!
//! Signature verification follows Twilio's SDKs (python, node, go): the URL Twilio
//! requested, then every form parameter sorted by name (each distinct value of a repeated
//! name, sorted), HMAC-SHA1 with the auth token, base64. dashd sits behind a proxy, so the
//! URL is rebuilt from the configured `public_url` (see [`signed_url`]), and the variants
//! the SDKs accept are tried (port removed, default port added, WHATWG-normalised).
//! JSON bodies carry `bodySHA256` in the URL instead: the signature covers the URL
//! alone and the body's SHA-256 must equal that value.

use async_trait::async_trait;
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use chrono::{DateTime, Utc};
use dash_core::api::{Attachment, Location, MessageBody};
use dash_core::flow::document::MediaKind;
use dash_core::provider::{ErrorClass, ProviderKind};
use serde::Deserialize;

use super::signature::{base64, equal, hmac_sha1, sha256_hex};
use super::{
    ConfigError, ContactIds, Content, DeliveryStatus, MediaSource, OutboundMessage, ProbeReport,
    ProviderConfig, ProviderEvent, SEND_TIMEOUT, Secret, SendError, SendReceipt, WebhookError,
    WebhookRequest, WhatsAppProvider, e164, excerpt, numbered_text,
};

/// The REST API version every path here uses.
const API_VERSION: &str = "2010-04-01";
/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The query parameter carrying a JSON body's SHA-256.
const BODY_HASH_PARAM: &str = "bodySHA256";
/// Twilio's channel prefix for WhatsApp addresses.
const WHATSAPP_PREFIX: &str = "whatsapp:";

/// The Twilio provider for one bot.
#[derive(Debug, Clone)]
pub struct Twilio {
    http: reqwest::Client,
    /// REST API root, without a trailing `/`.
    base_url: String,
    account_sid: String,
    /// The WhatsApp sender, `whatsapp:+E164`.
    from: String,
    /// The exact public URL Twilio calls for this bot's webhooks.
    public_url: String,
    /// Absent: nothing can be sent and no webhook verified, and both say so.
    auth_token: Option<Secret>,
}

impl Twilio {
    /// A client from the bot's `twilio` settings. `account_sid`, `from` and `public_url`
    /// must be there; a missing `auth_token` is reported when sending (the provider is
    /// broken) and when a webhook arrives (not configured), so the operator is told
    /// where it matters.
    pub fn new(config: &ProviderConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        let base_url = config.required("base_url")?.trim().trim_end_matches('/');
        if !is_http_url(base_url) {
            return Err(ConfigError(format!(
                "twilio base_url must be an http(s) URL, not {base_url:?}"
            )));
        }
        let account_sid = config.required("account_sid")?.trim();
        // It becomes a path segment: letters and digits only (`AC` + 32 hex digits).
        if !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError(format!(
                "twilio account_sid must be letters and digits (AC...), not {account_sid:?}"
            )));
        }
        let from_setting = config.required("from")?;
        let from = e164(from_setting).ok_or_else(|| {
            ConfigError(format!(
                "twilio from must be the WhatsApp sender in E.164 (+15551234567), not {from_setting:?}"
            ))
        })?;
        let public_url = config.required("public_url")?.trim();
        if !is_http_url(public_url) {
            return Err(ConfigError(format!(
                "twilio public_url must be the http(s) URL Twilio calls, not {public_url:?}"
            )));
        }
        Ok(Self {
            http,
            base_url: base_url.to_owned(),
            account_sid: account_sid.to_owned(),
            from: format!("{WHATSAPP_PREFIX}{from}"),
            public_url: public_url.to_owned(),
            auth_token: config.secret("auth_token").cloned(),
        })
    }

    fn messages_url(&self) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}/Messages.json",
            self.base_url, self.account_sid
        )
    }

    fn account_url(&self) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}.json",
            self.base_url, self.account_sid
        )
    }

    fn auth_token(&self) -> Result<&Secret, SendError> {
        self.auth_token
            .as_ref()
            .ok_or_else(|| SendError::broken("twilio needs the secret auth_token"))
    }

    /// The create-message form for a message: `To`, `From`, the content's parameters,
    /// and `StatusCallback` (status callbacks come to the same webhook URL).
    fn message_form(
        &self,
        message: &OutboundMessage,
    ) -> Result<Vec<(&'static str, String)>, SendError> {
        let to = recipient_address(&message.to)?;
        let mut form = vec![("To", to), ("From", self.from.clone())];
        form.extend(content_form(&message.content)?);
        form.push(("StatusCallback", self.public_url.clone()));
        Ok(form)
    }

    /// A failed response as a classified error, with Twilio's code and reason.
    async fn response_error(&self, what: &str, response: reqwest::Response) -> SendError {
        let status = response.status().as_u16();
        // A body that cannot be read is reported by its status alone.
        let text = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<ErrorBody>(&text).ok();
        let code = error.as_ref().and_then(ErrorBody::code);
        let reason = error
            .as_ref()
            .and_then(ErrorBody::reason)
            .map(excerpt)
            .or_else(|| code.and_then(meaning).map(str::to_owned))
            .or_else(|| Some(excerpt(&text)).filter(|t| !t.is_empty()))
            .unwrap_or_else(|| "no reason given".to_owned());
        let mut message = match code {
            Some(code) => format!("twilio {what}: HTTP {status}, error {code}: {reason}"),
            None => format!("twilio {what}: HTTP {status}: {reason}"),
        };
        if let Some(more_info) = error.as_ref().and_then(|e| e.more_info.as_deref()) {
            message.push_str(&format!(" ({})", excerpt(more_info)));
        }
        SendError {
            class: classify(status, code),
            code: Some(code.map_or_else(|| status.to_string(), |c| c.to_string())),
            message: self.redact(message),
        }
    }

    /// Text with the auth token blotted out, should a response ever echo it.
    fn redact(&self, text: String) -> String {
        match &self.auth_token {
            Some(token) => text.replace(token.expose(), "***"),
            None => text,
        }
    }
}

#[async_trait]
impl WhatsAppProvider for Twilio {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Twilio
    }

    async fn send(&self, message: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let form = self.message_form(message)?;
        let token = self.auth_token()?;
        let response = self
            .http
            .post(self.messages_url())
            .basic_auth(&self.account_sid, Some(token.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .timeout(SEND_TIMEOUT)
            .send()
            .await
            .map_err(|err| SendError::transport(&err))?;
        if !response.status().is_success() {
            return Err(self.response_error("send failed", response).await);
        }
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|err| SendError::transport(&err))?;
        // Twilio has accepted the message: without its sid it cannot be tracked, and
        // sending it again would deliver it twice, so this message fails for good.
        match serde_json::from_str::<CreatedMessage>(&text) {
            Ok(CreatedMessage { sid: Some(sid) }) if !sid.is_empty() => Ok(SendReceipt {
                provider_message_id: sid,
            }),
            _ => Err(SendError::permanent(self.redact(format!(
                "twilio answered HTTP {status} without a message sid: {}",
                excerpt(&text)
            )))
            .with_code(status.to_string())),
        }
    }

    fn parse_webhook(
        &self,
        request: &WebhookRequest<'_>,
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        let token = self.auth_token.as_ref().ok_or_else(|| {
            WebhookError::NotConfigured(
                "twilio needs the secret auth_token to verify X-Twilio-Signature".into(),
            )
        })?;
        let signature = request
            .headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| WebhookError::Signature("missing X-Twilio-Signature header".into()))?
            .to_str()
            .map_err(|_| WebhookError::Signature("X-Twilio-Signature is not text".into()))?;
        let url = signed_url(&self.public_url, request.query);
        match verify(token.expose(), &url, request, signature)? {
            Verified::Form(params) => Ok(vec![event_from_params(&params, request.now)?]),
            // Messaging webhooks are forms; a signed JSON body is some other Twilio
            // product's event.
            Verified::Json => Ok(vec![ProviderEvent::Ignored {
                kind: "json".into(),
            }]),
        }
    }

    async fn probe(&self) -> Result<ProbeReport, SendError> {
        let token = self.auth_token()?;
        let response = self
            .http
            .get(self.account_url())
            .basic_auth(&self.account_sid, Some(token.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(SEND_TIMEOUT)
            .send()
            .await
            .map_err(|err| SendError::transport(&err))?;
        if !response.status().is_success() {
            return Err(self.response_error("account check failed", response).await);
        }
        let text = response
            .text()
            .await
            .map_err(|err| SendError::transport(&err))?;
        // The account resource holds the auth token: only these two fields are read.
        let account: AccountResource = serde_json::from_str(&text).map_err(|_| {
            SendError::retryable("twilio account check: the answer is not an account resource")
        })?;
        let name = account.friendly_name.unwrap_or_default();
        match account.status.as_deref() {
            Some("active") => Ok(ProbeReport {
                detail: format!(
                    "account {} ({}) active, sending as {}",
                    self.account_sid, name, self.from
                ),
            }),
            Some(status) => Err(SendError::broken(format!(
                "twilio account {} is {status}",
                self.account_sid
            ))),
            None => Err(SendError::broken(format!(
                "twilio account {} has no status",
                self.account_sid
            ))),
        }
    }
}

/// `whatsapp:+E164` of the recipient's phone. Twilio addresses WhatsApp users by phone
/// number only: a contact known by a BSUID or a LID alone cannot be reached through it.
fn recipient_address(to: &super::Recipient) -> Result<String, SendError> {
    let phone = to.phone.as_deref().ok_or_else(|| {
        SendError::permanent(
            "twilio addresses WhatsApp users by phone number, and this contact has none (only a BSUID or LID)",
        )
    })?;
    let phone = e164(phone).ok_or_else(|| {
        SendError::permanent(format!("recipient phone {phone:?} is not an E.164 number"))
    })?;
    Ok(format!("{WHATSAPP_PREFIX}{phone}"))
}

/// The form parameters that carry a content.
fn content_form(content: &Content) -> Result<Vec<(&'static str, String)>, SendError> {
    match content {
        // WhatsApp previews links in session messages by itself; Twilio has no quote
        // parameter, so `reply_to` is not sent.
        Content::Text { body, .. } => Ok(vec![("Body", body.clone())]),
        Content::Media {
            source, caption, ..
        } => match source {
            // Twilio infers the kind (and the file name) from the fetched URL.
            MediaSource::Link(url) => {
                let mut form = Vec::new();
                if let Some(caption) = caption.as_ref().filter(|c| !c.is_empty()) {
                    form.push(("Body", caption.clone()));
                }
                form.push(("MediaUrl", url.clone()));
                Ok(form)
            }
            MediaSource::Id(id) => Err(SendError::permanent(format!(
                "twilio sends media by public URL only; media by provider id ({id}) is not supported"
            ))),
        },
        // Interactive messages exist on Twilio only as Content templates.
        Content::Menu { body, choices, .. } => Ok(vec![("Body", numbered_text(body, choices))]),
        Content::Template {
            name, parameters, ..
        } => {
            // The Content SID fixes the language: `language` has no parameter here.
            let mut form = vec![("ContentSid", name.clone())];
            if !parameters.is_empty() {
                form.push(("ContentVariables", content_variables(parameters)));
            }
            Ok(form)
        }
        Content::Location(location) => location_form(location),
        Content::Reaction { .. } => Err(SendError::permanent(
            "twilio does not support WhatsApp reactions",
        )),
        Content::MarkRead { .. } => Err(SendError::permanent(
            "twilio does not support marking WhatsApp messages as read",
        )),
    }
}

/// `ContentVariables`: the parameters as a JSON object keyed `"1"`, `"2"`, ...
fn content_variables(parameters: &[String]) -> String {
    let variables: serde_json::Map<String, serde_json::Value> = parameters
        .iter()
        .enumerate()
        .map(|(index, value)| ((index + 1).to_string(), value.clone().into()))
        .collect();
    serde_json::Value::Object(variables).to_string()
}

/// Twilio's WhatsApp location message: `Body={name}` and
/// `PersistentAction=geo:{latitude},{longitude}|{label}`. The name is required, so the
/// address stands in for a missing name, and the coordinates for both; the address is
/// the label under a name.
fn location_form(location: &Location) -> Result<Vec<(&'static str, String)>, SendError> {
    let Location {
        latitude,
        longitude,
        name,
        address,
    } = location;
    // NaN and infinities are outside both ranges.
    if !((-90.0..=90.0).contains(latitude) && (-180.0..=180.0).contains(longitude)) {
        return Err(SendError::permanent(format!(
            "location {latitude},{longitude} is not a point on the map"
        )));
    }
    let name = name.as_deref().filter(|n| !n.trim().is_empty());
    let address = address.as_deref().filter(|a| !a.trim().is_empty());
    let (body, label) = match (name, address) {
        (Some(name), address) => (name.to_owned(), address),
        (None, Some(address)) => (address.to_owned(), None),
        (None, None) => (format!("{latitude},{longitude}"), None),
    };
    let mut action = format!("geo:{latitude},{longitude}");
    if let Some(label) = label {
        action.push('|');
        action.push_str(label);
    }
    Ok(vec![("Body", body), ("PersistentAction", action)])
}

/// How a failed request is treated, from Twilio's error code (first) and the HTTP status.
///
/// Retryable: rate limits (20429, 63018), Twilio-side failures (20500, 20503), 429,
/// 5xx. The provider is broken for the bot: bad credentials or account (20003, 20005,
/// 10001, 401, 403), the account's resource not found (20404, 404: a wrong
/// `account_sid` or `base_url`), a sender that is not a WhatsApp sender of this account
/// (21212, 21601, 21606, 21661, 63001, 63002, 63007, 63008). Permanent for this message:
/// the recipient or the content (21211, 21408, 21608, 21610, 21614, 21617, 63003,
/// 63016, 63024, 63032) and every other 4xx.
pub fn classify(http_status: u16, code: Option<i64>) -> ErrorClass {
    match code {
        Some(20429 | 20500 | 20503 | 63018) => return ErrorClass::Retryable,
        Some(
            20003 | 20005 | 10001 | 20404 | 21212 | 21601 | 21606 | 21661 | 63001 | 63002 | 63007
            | 63008,
        ) => return ErrorClass::ProviderBroken,
        Some(21211 | 21408 | 21608 | 21610 | 21614 | 21617 | 63003 | 63016 | 63024 | 63032) => {
            return ErrorClass::Permanent;
        }
        _ => {}
    }
    match http_status {
        429 => ErrorClass::Retryable,
        401 | 403 | 404 => ErrorClass::ProviderBroken,
        400..=499 => ErrorClass::Permanent,
        // 5xx, and anything a REST API should not answer (1xx, 3xx).
        _ => ErrorClass::Retryable,
    }
}

/// What a Twilio error code means, for errors that come without a message (status
/// callbacks usually do).
fn meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        20003 => "authentication failed (account SID or auth token)",
        20404 => "resource not found",
        20429 => "too many requests",
        21211 => "invalid 'To' number",
        21408 => "sending to the recipient's region is not enabled (geo permissions)",
        21608 => "the recipient is not verified for this trial account",
        21610 => "the recipient has unsubscribed (STOP)",
        21606 | 63007 => "the 'From' address is not a WhatsApp sender of this account",
        63003 => "the recipient is not a reachable WhatsApp address",
        63016 => "outside the 24-hour window: send a template (ContentSid)",
        63018 => "WhatsApp rate limit exceeded for the sender",
        63024 => "invalid message recipient",
        63032 => "the recipient's number is part of a WhatsApp experiment",
        _ => return None,
    })
}

/// The URL Twilio signed for a request that reached dashd with `query`: the configured
/// public URL (dashd runs behind a proxy that may change scheme, host, port and path),
/// with the query as received when there is one. Twilio requests exactly the URL it is
/// configured with, plus `bodySHA256` for JSON bodies, so the received query is what it
/// signed; the configured URL's own query stands only when the request came without one.
pub fn signed_url(public_url: &str, query: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        Some(query) => {
            let base = public_url.split(['?', '#']).next().unwrap_or(public_url);
            format!("{base}?{query}")
        }
        None => public_url.to_owned(),
    }
}

/// `X-Twilio-Signature` of a request to `url` with form parameters `params`:
/// base64(HMAC-SHA1(auth token, URL + name + value for every parameter, sorted by name
/// then value, exact repeats once)).
pub fn compute_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut message = url.to_owned();
    for (name, value) in sorted {
        message.push_str(name);
        message.push_str(value);
    }
    base64(&hmac_sha1(auth_token.as_bytes(), message.as_bytes()))
}

/// Whether `signature` is Twilio's for `url` (or a variant of it Twilio's SDKs accept)
/// and `params`, compared in constant time.
pub fn signature_matches(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let given = signature.trim().as_bytes();
    let mut matched = false;
    for candidate in url_variants(url) {
        matched |= equal(
            compute_signature(auth_token, &candidate, params).as_bytes(),
            given,
        );
    }
    matched
}

/// The URL as given, its WHATWG-normalised form (node's `new URL()`: `'` becomes `%27`
/// in the query, the host is lowercased, a default port dropped), and each of those
/// with its port removed or, without one, the scheme's default port added.
fn url_variants(url: &str) -> Vec<String> {
    let mut bases = vec![url.to_owned()];
    if let Ok(parsed) = reqwest::Url::parse(url) {
        let normalised = String::from(parsed);
        if normalised != url {
            bases.push(normalised);
        }
    }
    let mut variants: Vec<String> = Vec::new();
    for base in bases {
        let other = other_port_form(&base);
        for variant in std::iter::once(base).chain(other) {
            if !variants.contains(&variant) {
                variants.push(variant);
            }
        }
    }
    variants
}

/// The URL without its port when it has one, or with the scheme's default port (443
/// for https, 80 for http) when it has none. None for other schemes or no authority.
fn other_port_form(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    // An IPv6 host is bracketed: its port (if any) follows the `]`.
    let host_end = if host_port.starts_with('[') {
        host_port.find(']').map_or(host_port.len(), |i| i + 1)
    } else {
        host_port.find(':').unwrap_or(host_port.len())
    };
    let (host, port) = host_port.split_at(host_end);
    if port.starts_with(':') {
        return Some(format!("{scheme}://{userinfo}{host}{tail}"));
    }
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        return None;
    };
    Some(format!("{scheme}://{userinfo}{host}:{default_port}{tail}"))
}

/// What a verified webhook carries.
enum Verified {
    /// Form parameters (the body of a POST, the query of a GET).
    Form(Vec<(String, String)>),
    /// A JSON body, its hash checked.
    Json,
}

/// Checks the signature of a request whose signed URL is `url`. A URL with `bodySHA256`
/// signs the URL alone and the body by its hash; a JSON body without it is refused; any
/// other body is a form whose parameters are signed (a GET's are in the URL already).
fn verify(
    auth_token: &str,
    url: &str,
    request: &WebhookRequest<'_>,
    signature: &str,
) -> Result<Verified, WebhookError> {
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or("");
    let body_hash = form_pairs(query.as_bytes())
        .into_iter()
        .find(|(name, _)| name == BODY_HASH_PARAM)
        .map(|(_, value)| value);
    if let Some(expected) = body_hash {
        let hash_ok = equal(
            sha256_hex(request.body).as_bytes(),
            expected.trim().to_ascii_lowercase().as_bytes(),
        );
        let signature_ok = signature_matches(auth_token, url, &[], signature);
        if !(hash_ok && signature_ok) {
            return Err(WebhookError::Signature(
                "X-Twilio-Signature or bodySHA256 does not match".into(),
            ));
        }
        return Ok(Verified::Json);
    }
    if is_json(request) {
        return Err(WebhookError::Signature(
            "a JSON webhook must carry bodySHA256 in its URL".into(),
        ));
    }
    let get = *request.method == Method::GET;
    let params = if get {
        Vec::new()
    } else {
        form_pairs(request.body)
    };
    if !signature_matches(auth_token, url, &params, signature) {
        return Err(WebhookError::Signature(
            "X-Twilio-Signature does not match".into(),
        ));
    }
    Ok(Verified::Form(if get {
        form_pairs(request.query.unwrap_or("").as_bytes())
    } else {
        params
    }))
}

fn is_json(request: &WebhookRequest<'_>) -> bool {
    request
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Decoded `name=value` pairs of a form body or query, in order. Bytes that are not
/// UTF-8 decode lossily, so this never fails; such a body simply fails the signature.
fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes).unwrap_or_default()
}

/// The first non-empty value of a parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, value)| key == name && !value.trim().is_empty())
        .map(|(_, value)| value.as_str())
}

/// The event a verified form webhook reports: a status callback (it has
/// `MessageStatus`), an inbound WhatsApp message, or something DashOffice ignores.
fn event_from_params(
    params: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<ProviderEvent, WebhookError> {
    let message_sid = param(params, "MessageSid")
        .or_else(|| param(params, "SmsMessageSid"))
        .or_else(|| param(params, "SmsSid"));
    if let Some(status) = param(params, "MessageStatus")
        && !matches!(status, "received" | "receiving")
    {
        let message_sid = message_sid
            .ok_or_else(|| WebhookError::Malformed("status callback without MessageSid".into()))?;
        return Ok(status_event(params, status, message_sid, now));
    }
    let Some(from) = param(params, "From") else {
        return Ok(ProviderEvent::Ignored {
            kind: "unknown".into(),
        });
    };
    if !from.starts_with(WHATSAPP_PREFIX) {
        // An SMS (or another channel) reaching the same webhook.
        return Ok(ProviderEvent::Ignored {
            kind: "not_whatsapp".into(),
        });
    }
    let message_sid = message_sid
        .ok_or_else(|| WebhookError::Malformed("inbound message without MessageSid".into()))?;
    Ok(inbound_event(params, from, message_sid, now))
}

/// A status callback. `queued`, `sending`, `accepted`, `scheduled` and `canceled` come
/// before (or instead of) a send and are ignored: the outbox already holds the message as
/// sent once Twilio accepted it. `undelivered` is a failure.
fn status_event(
    params: &[(String, String)],
    status: &str,
    message_sid: &str,
    now: DateTime<Utc>,
) -> ProviderEvent {
    let status = match status {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" | "undelivered" => DeliveryStatus::Failed,
        other => {
            return ProviderEvent::Ignored {
                kind: format!("status:{other}"),
            };
        }
    };
    let error = (status == DeliveryStatus::Failed).then(|| {
        let code = param(params, "ErrorCode");
        let reason = param(params, "ErrorMessage")
            .map(excerpt)
            .or_else(|| {
                code.and_then(|c| c.parse().ok())
                    .and_then(meaning)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "twilio reported the message undelivered".to_owned());
        (code.unwrap_or("undelivered").to_owned(), reason)
    });
    ProviderEvent::Status {
        provider_message_id: message_sid.to_owned(),
        status,
        error,
        recipient: ContactIds {
            phone: param(params, "To").and_then(e164),
            ..ContactIds::default()
        },
        at: now,
    }
}

/// An inbound WhatsApp message: text, a quick-reply button (`ButtonPayload` is the
/// reply id), the first media (by its Twilio URL), a shared location.
fn inbound_event(
    params: &[(String, String)],
    from: &str,
    message_sid: &str,
    now: DateTime<Utc>,
) -> ProviderEvent {
    let name = param(params, "ProfileName").map(str::to_owned);
    let text = param(params, "Body").unwrap_or_default().to_owned();
    let mut body = MessageBody {
        text: text.clone(),
        name: name.clone(),
        ..MessageBody::default()
    };
    if let Some(payload) = param(params, "ButtonPayload") {
        body.reply_id = Some(payload.to_owned());
        if let Some(label) = param(params, "ButtonText") {
            body.text = label.to_owned();
        }
    }
    let media_count: u32 = param(params, "NumMedia")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if let Some(url) = param(params, "MediaUrl0").filter(|_| media_count > 0) {
        let mime_type = param(params, "MediaContentType0").map(str::to_owned);
        body.attachment = Some(Attachment {
            kind: media_kind(mime_type.as_deref()),
            reference: url.to_owned(),
            mime_type,
            caption: Some(text).filter(|t| !t.is_empty()),
            filename: None,
        });
    }
    let coordinate = |name: &str| {
        param(params, name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    if let (Some(latitude), Some(longitude)) = (coordinate("Latitude"), coordinate("Longitude")) {
        body.location = Some(Location {
            latitude,
            longitude,
            name: param(params, "Label").map(str::to_owned),
            address: param(params, "Address").map(str::to_owned),
        });
    }
    let phone = e164(from).or_else(|| param(params, "WaId").and_then(e164));
    ProviderEvent::Inbound {
        from: ContactIds {
            phone,
            name,
            ..ContactIds::default()
        },
        provider_message_id: message_sid.to_owned(),
        body,
        at: now,
        from_me: false,
    }
}

/// The media kind of a MIME type; anything not image, video or audio is a document.
fn media_kind(mime_type: Option<&str>) -> MediaKind {
    let mime = mime_type.unwrap_or_default().to_ascii_lowercase();
    if mime.starts_with("image/") {
        MediaKind::Image
    } else if mime.starts_with("video/") {
        MediaKind::Video
    } else if mime.starts_with("audio/") {
        MediaKind::Audio
    } else {
        MediaKind::Document
    }
}

fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")) && url.len() > "https://".len()
}

/// A 201 answer to a create-message request (the Message resource; only its sid is read).
#[derive(Debug, Deserialize)]
struct CreatedMessage {
    sid: Option<String>,
}

/// An answer to a fetch-account request (the Account resource, which also holds the auth
/// token: only these fields are read).
#[derive(Debug, Deserialize)]
struct AccountResource {
    status: Option<String>,
    friendly_name: Option<String>,
}

/// A Twilio error body: the 2010-04-01 shape `{code, message, more_info, status}`, or
/// the RFC 9457 shape `{type, title, status, code, detail}` newer APIs answer.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    more_info: Option<String>,
}

impl ErrorBody {
    /// The code, given as a number or as a numeric string.
    fn code(&self) -> Option<i64> {
        match self.code.as_ref()? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn reason(&self) -> Option<&str> {
        [&self.message, &self.detail, &self.title]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|text| !text.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dash_core::api::Choice;
    use uuid::Uuid;

    use super::*;
    use crate::adapter::Recipient;

    fn config(settings: &[(&str, &str)], token: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            bot_id: Uuid::nil(),
            kind: ProviderKind::Twilio,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secrets: token
                .map(|t| ("auth_token".to_owned(), Secret::new(t)))
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn twilio() -> Twilio {
        Twilio::new(
            &config(
                &[
                    ("account_sid", "AC123"),
                    ("from", "+15551234567"),
                    ("public_url", "https://bots.example.com/webhook/twilio/b1"),
                ],
                Some("secret-token"),
            ),
            reqwest::Client::new(),
        )
        .unwrap()
    }

    fn message(content: Content) -> OutboundMessage {
        OutboundMessage {
            bot_id: Uuid::nil(),
            message_id: Uuid::nil(),
            to: Recipient {
                phone: Some("+18551234567".into()),
                ..Recipient::default()
            },
            content,
        }
    }

    fn value<'a>(form: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        form.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn settings_are_checked_and_normalised() {
        let provider = twilio();
        assert_eq!(provider.from, "whatsapp:+15551234567");
        assert_eq!(provider.base_url, "https://api.twilio.com");
        assert_eq!(
            provider.messages_url(),
            "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert_eq!(
            provider.account_url(),
            "https://api.twilio.com/2010-04-01/Accounts/AC123.json"
        );
        let with_prefix = Twilio::new(
            &config(
                &[
                    ("base_url", "http://127.0.0.1:9/"),
                    ("account_sid", "AC123"),
                    ("from", "whatsapp:+15551234567"),
                    ("public_url", "https://x.example/hook"),
                ],
                None,
            ),
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(with_prefix.from, "whatsapp:+15551234567");
        assert_eq!(with_prefix.base_url, "http://127.0.0.1:9");
        for bad in [
            &[("from", "+15551234567"), ("public_url", "https://x/h")][..],
            &[
                ("account_sid", "AC1/../x"),
                ("from", "+15551234567"),
                ("public_url", "https://x/h"),
            ],
            &[
                ("account_sid", "AC1"),
                ("from", "not a number"),
                ("public_url", "https://x/h"),
            ],
            &[
                ("account_sid", "AC1"),
                ("from", "+15551234567"),
                ("public_url", "ftp://x/h"),
            ],
            &[("account_sid", "AC1"), ("from", "+15551234567")],
        ] {
            assert!(
                Twilio::new(&config(bad, Some("t")), reqwest::Client::new()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_content_has_its_form() {
        let provider = twilio();
        let form = provider
            .message_form(&message(Content::Text {
                body: "hi".into(),
                preview_url: true,
                reply_to: Some("SM1".into()),
            }))
            .unwrap();
        assert_eq!(
            form,
            vec![
                ("To", "whatsapp:+18551234567".to_owned()),
                ("From", "whatsapp:+15551234567".to_owned()),
                ("Body", "hi".to_owned()),
                (
                    "StatusCallback",
                    "https://bots.example.com/webhook/twilio/b1".to_owned()
                ),
            ]
        );

        let menu = provider
            .message_form(&message(Content::Menu {
                body: "Pick".into(),
                choices: vec![
                    Choice {
                        id: "a".into(),
                        label: "Apples".into(),
                    },
                    Choice {
                        id: "b".into(),
                        label: "Pears".into(),
                    },
                ],
                button: "Options".into(),
            }))
            .unwrap();
        assert_eq!(value(&menu, "Body"), Some("Pick\n1. Apples\n2. Pears"));

        let template = provider
            .message_form(&message(Content::Template {
                name: "HX123".into(),
                language: "en".into(),
                parameters: vec!["Ann".into(), "3pm".into()],
            }))
            .unwrap();
        assert_eq!(value(&template, "ContentSid"), Some("HX123"));
        let variables: serde_json::Value =
            serde_json::from_str(value(&template, "ContentVariables").unwrap()).unwrap();
        assert_eq!(variables, serde_json::json!({"1": "Ann", "2": "3pm"}));
        assert_eq!(value(&template, "Body"), None);

        let bare = provider
            .message_form(&message(Content::Template {
                name: "HX9".into(),
                language: "en".into(),
                parameters: vec![],
            }))
            .unwrap();
        assert_eq!(value(&bare, "ContentVariables"), None);

        let located = provider
            .message_form(&message(Content::Location(Location {
                latitude: 37.78789,
                longitude: -122.391664,
                name: Some("Twilio".into()),
                address: Some("375 Beale St".into()),
            })))
            .unwrap();
        assert_eq!(value(&located, "Body"), Some("Twilio"));
        assert_eq!(
            value(&located, "PersistentAction"),
            Some("geo:37.78789,-122.391664|375 Beale St")
        );
        let unnamed = location_form(&Location {
            latitude: 1.5,
            longitude: 2.0,
            name: None,
            address: None,
        })
        .unwrap();
        assert_eq!(
            unnamed,
            vec![
                ("Body", "1.5,2".to_owned()),
                ("PersistentAction", "geo:1.5,2".to_owned())
            ]
        );
        assert!(
            location_form(&Location {
                latitude: 91.0,
                longitude: 0.0,
                name: None,
                address: None
            })
            .is_err()
        );
    }

    #[test]
    fn what_twilio_cannot_send_is_permanent() {
        let provider = twilio();
        for content in [
            Content::Media {
                kind: MediaKind::Image,
                source: MediaSource::Id("123".into()),
                caption: None,
                filename: None,
            },
            Content::Reaction {
                message_id: "SM1".into(),
                emoji: "👍".into(),
            },
            Content::MarkRead {
                message_id: "SM1".into(),
            },
        ] {
            let err = provider.message_form(&message(content)).unwrap_err();
            assert_eq!(err.class, ErrorClass::Permanent, "{err}");
            assert!(
                err.message.contains("not supported") || err.message.contains("does not support")
            );
        }
        let mut to_bsuid = message(Content::Text {
            body: "hi".into(),
            preview_url: false,
            reply_to: None,
        });
        to_bsuid.to = Recipient {
            phone: None,
            bsuid: Some("US.1234".into()),
            lid: None,
        };
        let err = provider.message_form(&to_bsuid).unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert!(err.message.contains("phone number"));
    }

    #[test]
    fn errors_are_classified() {
        use ErrorClass::*;
        for (status, code, class) in [
            (400, Some(21211), Permanent),
            (400, Some(21614), Permanent),
            (400, Some(21408), Permanent),
            (400, Some(63016), Permanent),
            (400, Some(63024), Permanent),
            (400, Some(99999), Permanent),
            (422, None, Permanent),
            (401, Some(20003), ProviderBroken),
            (403, None, ProviderBroken),
            (404, Some(20404), ProviderBroken),
            (404, None, ProviderBroken),
            (400, Some(20003), ProviderBroken),
            (400, Some(63007), ProviderBroken),
            (400, Some(21606), ProviderBroken),
            (429, Some(20429), Retryable),
            (429, None, Retryable),
            (400, Some(63018), Retryable),
            (500, Some(20500), Retryable),
            (503, Some(20503), Retryable),
            (502, None, Retryable),
            (302, None, Retryable),
        ] {
            assert_eq!(classify(status, code), class, "{status} {code:?}");
        }
    }

    #[test]
    fn port_forms() {
        assert_eq!(
            other_port_form("https://a.example/x?y=1").as_deref(),
            Some("https://a.example:443/x?y=1")
        );
        assert_eq!(
            other_port_form("http://u:p@a.example:1234/x").as_deref(),
            Some("http://u:p@a.example/x")
        );
        assert_eq!(
            other_port_form("https://[::1]:8443/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            other_port_form("https://[::1]").as_deref(),
            Some("https://[::1]:443")
        );
        assert_eq!(other_port_form("ftp://a/x"), None);
        assert_eq!(other_port_form("no scheme"), None);
    }

    #[test]
    fn signed_url_prefers_the_received_query() {
        assert_eq!(signed_url("https://a/x", Some("q=1")), "https://a/x?q=1");
        assert_eq!(
            signed_url("https://a/x?p=2", Some("q=1")),
            "https://a/x?q=1"
        );
        assert_eq!(signed_url("https://a/x?p=2", None), "https://a/x?p=2");
        assert_eq!(signed_url("https://a/x", Some("")), "https://a/x");
    }

    #[test]
    fn signature_matches_the_published_vector() {
        // twilio-python test_request_validator.py (../shared/vectors/twilio.json).
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute_signature("12345", url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(signature_matches(
            "12345",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!signature_matches(
            "12346",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!signature_matches(
            "12345",
            url,
            &params[1..],
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn inbound_media_button_and_location() {
        let now = Utc::now();
        let params: Vec<(String, String)> = [
            ("MessageSid", "SM1"),
            ("From", "whatsapp:+14155551234"),
            ("WaId", "14155551234"),
            ("ProfileName", "Jane"),
            ("Body", "look"),
            ("NumMedia", "1"),
            ("MediaUrl0", "https://api.twilio.com/m/ME1"),
            ("MediaContentType0", "video/mp4"),
            ("ButtonPayload", "yes-1"),
            ("ButtonText", "Yes"),
            ("Latitude", "37.5"),
            ("Longitude", "-122.25"),
            ("Label", "Office"),
            ("Address", "1 Main St"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let ProviderEvent::Inbound {
            from,
            body,
            provider_message_id,
            at,
            from_me,
        } = event_from_params(&params, now).unwrap()
        else {
            panic!("not inbound");
        };
        assert_eq!(provider_message_id, "SM1");
        assert_eq!(at, now);
        assert!(!from_me);
        assert_eq!(from.phone.as_deref(), Some("+14155551234"));
        assert_eq!(from.name.as_deref(), Some("Jane"));
        assert_eq!(body.reply_id.as_deref(), Some("yes-1"));
        assert_eq!(body.text, "Yes");
        let attachment = body.attachment.unwrap();
        assert_eq!(attachment.kind, MediaKind::Video);
        assert_eq!(attachment.reference, "https://api.twilio.com/m/ME1");
        assert_eq!(attachment.caption.as_deref(), Some("look"));
        let location = body.location.unwrap();
        assert_eq!((location.latitude, location.longitude), (37.5, -122.25));
        assert_eq!(location.name.as_deref(), Some("Office"));
        assert_eq!(location.address.as_deref(), Some("1 Main St"));
        assert_eq!(media_kind(Some("application/pdf")), MediaKind::Document);
        assert_eq!(media_kind(Some("IMAGE/JPEG")), MediaKind::Image);
        assert_eq!(media_kind(Some("audio/ogg")), MediaKind::Audio);
    }

    #[test]
    fn error_bodies_give_code_and_reason() {
        let legacy: ErrorBody = serde_json::from_str(
            r#"{"code":21211,"message":"The 'To' number 5551234567 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
        )
        .unwrap();
        assert_eq!(legacy.code(), Some(21211));
        assert!(
            legacy
                .reason()
                .unwrap()
                .contains("not a valid phone number")
        );
        let rfc: ErrorBody = serde_json::from_str(
            r#"{"type":"https://www.twilio.com/docs/api/errors/20001","title":"Validation failed","status":422,"code":"20001","detail":"Request validation failed"}"#,
        )
        .unwrap();
        assert_eq!(rfc.code(), Some(20001));
        assert_eq!(rfc.reason(), Some("Request validation failed"));
    }
}
