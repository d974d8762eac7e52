//! The flow document: what a tenant writes (TOML, or JSON) to describe a bot's
//! conversations. Parsing turns text into these types; every error names the flow, the
//! step and the field it is about. `docs/flows.md` is the reference for users.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A bot's conversational behaviour: settings shared by all flows, and the flows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Flow started by a first message that no trigger matches. Unset: no reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_flow: Option<String>,
    /// A conversation with no activity for this long ends (default 24h).
    #[serde(default = "default_expiry")]
    pub expiry: Span,
    /// What new conversations get outside business hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_hours: Option<OutOfHours>,
    /// Weekly opening hours and dated exceptions, in the bot's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<Hours>,
    /// Words that interrupt any flow, e.g. "menu" or "cancelar".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Command>,
    pub flows: Vec<Flow>,
}

fn default_expiry() -> Span {
    Span(Duration::from_secs(24 * 3600))
}

/// Out-of-hours behaviour: run a flow, or send one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutOfHours {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Opening hours per weekday (`"09:00-18:00"` ranges; a missing day is closed) and
/// dated exceptions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monday: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuesday: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wednesday: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thursday: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub friday: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saturday: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sunday: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<HoursException>,
}

/// A date with its own hours (`open = []` or absent: closed all day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursException {
    /// `YYYY-MM-DD`, in the bot's time zone.
    pub date: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A global command: its keywords interrupt whatever flow is running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub keywords: Vec<String>,
    /// How keywords match; commands default to the whole message.
    #[serde(default = "MatchMode::exact", rename = "match")]
    pub mode: MatchMode,
    /// Start this flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// End the conversation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    /// Sent before the command takes effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One flow: its triggers and its steps, run from the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Reminder and end when the customer stops answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
    pub steps: Vec<Step>,
}

/// What starts a flow: keywords or a regular expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// How keywords match (default: whole words).
    #[serde(default = "MatchMode::word", rename = "match")]
    pub mode: MatchMode,
    /// A regular expression (linear-time dialect: no look-around, no back-references).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// How a keyword matches a message. Matching ignores case and accents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// The whole message is the keyword.
    Exact,
    /// The keyword appears as whole words.
    Word,
    /// The message starts with the keyword.
    Prefix,
    /// The keyword appears anywhere, even inside a word.
    Contains,
}

impl MatchMode {
    fn exact() -> Self {
        MatchMode::Exact
    }
    fn word() -> Self {
        MatchMode::Word
    }
}

/// Idle handling for a flow waiting on the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idle {
    /// Silence before the reminder.
    pub after: Span,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<String>,
    /// Further silence, after the reminder, before the conversation ends (default: as `after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_after: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_message: Option<String>,
}

/// A step: its id, what it does, and where to go next (default: the following step;
/// after the last step the conversation ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Message {
        id: String,
        /// One text, or several sent one after another.
        #[serde(deserialize_with = "one_or_many", serialize_with = "many")]
        text: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<Media>,
        /// Pause before sending (typing feel), at most 30s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay: Option<Span>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Question {
        id: String,
        text: String,
        /// Variable receiving the validated answer: `vars.<var>`.
        var: String,
        #[serde(default)]
        validate: Validation,
        /// Sent after an invalid answer (default: the question again).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<String>,
        #[serde(default = "default_retries")]
        max_retries: u32,
        /// Step when retries run out (default: end the conversation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_fail: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Menu {
        id: String,
        text: String,
        options: Vec<MenuOption>,
        /// Variable receiving the chosen option's label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        var: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<String>,
        #[serde(default = "default_retries")]
        max_retries: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_fail: Option<String>,
    },
    Condition {
        id: String,
        branches: Vec<Branch>,
        /// Step when no branch holds (default: the following step).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Action {
        id: String,
        /// Assign variables: strings are templates, `{ expr = "..." }` an expression,
        /// numbers and booleans literal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set: Option<BTreeMap<String, serde_json::Value>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http: Option<Http>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_order: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        llm: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Handoff {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Step to continue with when an operator resumes the bot (default: end).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    Goto {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow: Option<String>,
    },
    End {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
}

fn default_retries() -> u32 {
    3
}

impl Step {
    /// The step's id.
    pub fn id(&self) -> &str {
        match self {
            Step::Message { id, .. }
            | Step::Question { id, .. }
            | Step::Menu { id, .. }
            | Step::Condition { id, .. }
            | Step::Action { id, .. }
            | Step::Handoff { id, .. }
            | Step::Goto { id, .. }
            | Step::End { id, .. } => id,
        }
    }

    /// The kind as written in documents.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Message { .. } => "message",
            Step::Question { .. } => "question",
            Step::Menu { .. } => "menu",
            Step::Condition { .. } => "condition",
            Step::Action { .. } => "action",
            Step::Handoff { .. } => "handoff",
            Step::Goto { .. } => "goto",
            Step::End { .. } => "end",
        }
    }

    /// True for steps that stop and wait for the customer or an operator.
    pub fn waits(&self) -> bool {
        matches!(
            self,
            Step::Question { .. } | Step::Menu { .. } | Step::Handoff { .. }
        )
    }
}

/// A picture, video, audio or document sent with a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// `https://` URL (templated).
    pub url: String,
    #[serde(rename = "type")]
    pub kind: MediaKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

/// Kinds of media WhatsApp accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
}

/// How a question's answer is checked and normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validation {
    /// Free text, optionally bounded in characters.
    Text {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// A number (`1234.5`, `1.234,5`), optionally an integer and within a range.
    Number {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        integer: bool,
    },
    Email,
    /// A phone number, normalised to E.164; without `+`, `country_code` is prefixed.
    Phone {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        country_code: Option<String>,
    },
    /// A date in one of `formats` (strftime), or today/tomorrow/yesterday words
    /// (English and Spanish) when `relative`; stored as `YYYY-MM-DD`.
    Date {
        #[serde(default = "default_date_formats")]
        formats: Vec<String>,
        #[serde(default)]
        relative: bool,
    },
    /// The whole answer must match (linear-time regex dialect).
    Regex {
        pattern: String,
    },
    /// One of these answers (case and accents ignored); the listed spelling is stored.
    Choices {
        choices: Vec<String>,
    },
}

impl Default for Validation {
    fn default() -> Self {
        Validation::Text {
            min: None,
            max: None,
        }
    }
}

fn default_date_formats() -> Vec<String> {
    vec!["%d/%m/%Y".into(), "%Y-%m-%d".into()]
}

/// A menu entry: shown numbered; chosen by number, label, synonym or reply id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuOption {
    /// Id for interactive replies (buttons, lists); default: the option's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub label: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synonyms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
}

/// A condition branch: the first whose `when` holds is taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// An expression, e.g. `vars.total > 100 and contact.vip`.
    pub when: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
}

/// An HTTP request made by an action step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[serde(default = "default_method")]
    pub method: String,
    /// Templated `http://` or `https://` URL.
    pub url: String,
    /// Templated header values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Templated body (sent as JSON when it parses as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Default 10s, at most 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
    /// Variables taken from the JSON response: `var = "path.to.field"` (`items.0.id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, String>,
    /// Step on a failed request or a non-2xx answer (default: end the conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}

/// A duration written as `30s`, `10m`, `1h30m`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// Parses `1h30m`-style text; units s, m, h, d.
    pub fn parse(text: &str) -> Result<Span, String> {
        let mut total: u64 = 0;
        let mut number = String::new();
        let mut any = false;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                ' ' if number.is_empty() => continue,
                _ => {
                    return Err(format!(
                        "{text:?} is not a duration: use e.g. 30s, 10m, 1h30m, 2d"
                    ));
                }
            };
            let value: u64 = number.parse().map_err(|_| {
                format!("{text:?} is not a duration: a number must precede each unit")
            })?;
            total = value
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("{text:?} is too long"))?;
            number.clear();
            any = true;
        }
        if !number.is_empty() || !any {
            return Err(format!(
                "{text:?} is not a duration: give a unit, e.g. 30s, 10m, 1h30m, 2d"
            ));
        }
        Ok(Span(Duration::from_secs(total)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => vec![text],
        OneOrMany::Many(texts) => texts,
    })
}

fn many<S: Serializer>(texts: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    match texts {
        [one] => serializer.serialize_str(one),
        more => more.serialize(serializer),
    }
}

/// A problem in a flow document, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl FlowError {
    /// An error about the document as a whole.
    pub fn document(message: impl Into<String>) -> Self {
        Self {
            flow: None,
            step: None,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(flow) = &self.flow {
            parts.push(format!("flow {flow:?}"));
        }
        if let Some(step) = &self.step {
            parts.push(format!("step {step:?}"));
        }
        if let Some(field) = &self.field {
            parts.push(format!("field {field}"));
        }
        if parts.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", parts.join(", "), self.message)
        }
    }
}

/// The text formats a document can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// JSON when the text starts with `{`, TOML otherwise.
    pub fn sniff(text: &str) -> Format {
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Toml
        }
    }
}

impl Document {
    /// Parses a document. Syntax and type errors are located by flow, step and field.
    pub fn parse(text: &str, format: Format) -> Result<Document, FlowError> {
        let raw: serde_json::Value = match format {
            Format::Toml => toml::from_str(text).map_err(|err| {
                FlowError::document(format!("TOML syntax: {}", err.to_string().trim()))
            })?,
            Format::Json => serde_json::from_str(text)
                .map_err(|err| FlowError::document(format!("JSON syntax: {err}")))?,
        };
        serde_path_to_error::deserialize(&raw).map_err(|err| locate(&raw, &err))
    }

    /// The document as TOML.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|err| err.to_string())
    }
}

/// Turns a deserialisation error's path (`flows[1].steps[2].validate.type`) into flow and
/// step ids looked up in the raw document.
fn locate(
    raw: &serde_json::Value,
    err: &serde_path_to_error::Error<serde_json::Error>,
) -> FlowError {
    use serde_path_to_error::Segment;
    let mut flow = None;
    let mut step = None;
    let mut field: Vec<String> = Vec::new();
    let mut node = Some(raw);
    let mut in_flows = false;
    let mut in_steps = false;
    for segment in err.path().iter() {
        match segment {
            Segment::Seq { index } => {
                node = node.and_then(|n| n.get(index));
                let id = node
                    .and_then(|n| n.get("id"))
                    .and_then(|id| id.as_str())
                    .map_or_else(|| format!("#{}", index + 1), str::to_owned);
                if in_steps && step.is_none() {
                    step = Some(id);
                    field.clear();
                } else if in_flows && flow.is_none() {
                    flow = Some(id);
                    field.clear();
                } else if let Some(last) = field.last_mut() {
                    last.push_str(&format!("[{index}]"));
                }
            }
            Segment::Map { key } => {
                node = node.and_then(|n| n.get(key));
                in_flows = in_flows || (flow.is_none() && key == "flows");
                in_steps = in_steps || (flow.is_some() && step.is_none() && key == "steps");
                field.push(key.clone());
            }
            Segment::Enum { variant } => field.push(variant.clone()),
            Segment::Unknown => {}
        }
    }
    let message = err.inner().to_string();
    // An unknown field's name is in the message; drop structural segments from `field`.
    let field: Vec<String> = field
        .into_iter()
        .filter(|f| f != "flows" && f != "steps")
        .collect();
    FlowError {
        flow,
        step,
        field: (!field.is_empty()).then(|| field.join(".")),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print() {
        assert_eq!(Span::parse("30s").unwrap().0.as_secs(), 30);
        assert_eq!(Span::parse("1h30m").unwrap().0.as_secs(), 5400);
        assert_eq!(Span::parse("2d").unwrap().0.as_secs(), 172_800);
        assert_eq!(Span::parse("1h 30m").unwrap().0.as_secs(), 5400);
        for bad in ["", "10", "m", "10x", "-5m", "99999999999999999999d"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Span::parse("90m").unwrap().to_string(), "1h30m");
        assert_eq!(Span(Duration::ZERO).to_string(), "0s");
    }

    #[test]
    fn errors_name_flow_step_and_field() {
        let doc = r#"
[[flows]]
id = "welcome"
[[flows.steps]]
id = "hello"
kind = "message"
text = "hi"
[[flows.steps]]
id = "ask"
kind = "question"
text = "name?"
var = "name"
validate = { type = "telepathy" }
"#;
        let err = Document::parse(doc, Format::Toml).unwrap_err();
        assert_eq!(err.flow.as_deref(), Some("welcome"));
        assert_eq!(err.step.as_deref(), Some("ask"));
        assert!(err.message.contains("telepathy"), "{err}");

        let unknown_kind = doc.replace("kind = \"question\"", "kind = \"dance\"");
        let err = Document::parse(&unknown_kind, Format::Toml).unwrap_err();
        assert_eq!(err.step.as_deref(), Some("ask"));
        assert!(err.message.contains("dance"), "{err}");

        let unknown_field = doc.replace("validate = { type = \"telepathy\" }", "colour = 1");
        let err = Document::parse(&unknown_field, Format::Toml).unwrap_err();
        assert!(err.message.contains("colour"), "{err}");
        assert_eq!(err.step.as_deref(), Some("ask"));
    }

    #[test]
    fn json_is_accepted_and_text_may_be_a_list() {
        let doc =
            r#"{"flows":[{"id":"f","steps":[{"id":"s","kind":"message","text":["a","b"]}]}]}"#;
        assert_eq!(Format::sniff(doc), Format::Json);
        let parsed = Document::parse(doc, Format::Json).unwrap();
        match &parsed.flows[0].steps[0] {
            Step::Message { text, .. } => assert_eq!(text, &["a", "b"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(parsed.expiry.0.as_secs(), 86_400);
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = Document::parse("[[flows]\n", Format::Toml).unwrap_err();
        assert!(err.message.starts_with("TOML syntax"), "{err}");
        assert!(Document::parse("{", Format::Json).is_err());
        assert!(
            Document::parse("", Format::Toml)
                .unwrap_err()
                .message
                .contains("flows")
        );
    }
}
