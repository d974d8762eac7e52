//! Validation and compilation of a flow document into a [`Bundle`]: every reference
//! resolved, every template, expression and regex compiled, every trigger folded into
//! one matcher. A document that compiles cannot fail on these at run time; every
//! problem found is reported, each naming its flow, step and field.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::document::{Document, Flow, FlowError, Step, Validation};
use super::hours::BusinessHours;
use super::template::{KNOWN_ROOTS, Templates};
use super::text::fold;
use super::triggers::{Matcher, Pattern, compile_regex};

/// Effects the executing daemon can carry out. An action it cannot run fails validation
/// instead of being silently skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub create_order: bool,
    pub notify: bool,
    pub llm: bool,
}

impl Capabilities {
    /// What this release executes: `set` and `http` only.
    pub const CURRENT: Capabilities = Capabilities {
        create_order: false,
        notify: false,
        llm: false,
    };
}

/// Longest allowed pause before a message.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Longest allowed HTTP timeout.
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest idle wait or expiry.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 86_400);
/// Default HTTP timeout.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated, compiled flow document, ready for the engine.
#[derive(Debug)]
pub struct Bundle {
    /// Version number given by storage (0 for a document not stored).
    pub version: u32,
    pub doc: Document,
    flow_index: HashMap<String, usize>,
    step_index: Vec<HashMap<String, usize>>,
    triggers: Matcher,
    commands: Matcher,
    pub(crate) templates: Templates,
    hours: Option<BusinessHours>,
    regexes: HashMap<String, regex::Regex>,
}

/// A step's position: (flow index, step index).
pub type Pos = (usize, usize);

impl Bundle {
    /// Validates and compiles `doc`. All problems are returned, not only the first.
    pub fn compile(
        doc: Document,
        version: u32,
        caps: Capabilities,
    ) -> Result<Bundle, Vec<FlowError>> {
        let mut v = Validator::new(&doc, caps);
        v.run();
        let Validator {
            errors,
            templates,
            regexes,
            hours,
            ..
        } = v;
        let mut errors = errors;

        let trigger_patterns: Vec<(usize, Pattern)> = doc
            .flows
            .iter()
            .enumerate()
            .flat_map(|(index, flow)| {
                flow.triggers
                    .iter()
                    .flat_map(move |t| patterns(index, &t.keywords, t.mode, t.regex.as_deref()))
            })
            .collect();
        let command_patterns: Vec<(usize, Pattern)> = doc
            .commands
            .iter()
            .enumerate()
            .flat_map(|(index, c)| patterns(index, &c.keywords, c.mode, None))
            .collect();
        let triggers = Matcher::compile(&trigger_patterns);
        let commands = Matcher::compile(&command_patterns);
        let (triggers, commands) = match (triggers, commands) {
            (Ok(t), Ok(c)) if errors.is_empty() => (t, c),
            (t, c) => {
                for err in [t.err(), c.err()].into_iter().flatten() {
                    if !err.pattern.is_empty() {
                        continue; // already reported per trigger
                    }
                    errors.push(FlowError::document(format!("triggers: {}", err.message)));
                }
                return Err(errors);
            }
        };
        let flow_index = doc
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), i))
            .collect();
        let step_index = doc
            .flows
            .iter()
            .map(|f| {
                f.steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.id().to_owned(), i))
                    .collect()
            })
            .collect();
        Ok(Bundle {
            version,
            doc,
            flow_index,
            step_index,
            triggers,
            commands,
            templates,
            hours,
            regexes,
        })
    }

    /// Parses, then compiles.
    pub fn from_text(
        text: &str,
        version: u32,
        caps: Capabilities,
    ) -> Result<Bundle, Vec<FlowError>> {
        let doc =
            Document::parse(text, super::document::Format::sniff(text)).map_err(|err| vec![err])?;
        Bundle::compile(doc, version, caps)
    }

    /// The flow a message starts, by trigger (earliest flow wins).
    pub fn trigger(&self, message: &str) -> Option<usize> {
        self.triggers.find(message)
    }

    /// The global command a message invokes.
    pub fn command(&self, message: &str) -> Option<usize> {
        self.commands.find(message)
    }

    /// A flow's index by id.
    pub fn flow(&self, id: &str) -> Option<usize> {
        self.flow_index.get(id).copied()
    }

    /// A step's position by flow index and step id.
    pub fn step(&self, flow: usize, id: &str) -> Option<Pos> {
        self.step_index.get(flow)?.get(id).map(|&s| (flow, s))
    }

    /// The step at `pos`.
    pub fn step_at(&self, pos: Pos) -> Option<&Step> {
        self.doc.flows.get(pos.0)?.steps.get(pos.1)
    }

    /// Business hours, when the document sets them.
    pub fn hours(&self) -> Option<&BusinessHours> {
        self.hours.as_ref()
    }

    /// Steps in all flows (bounds how many one event can run).
    pub fn step_count(&self) -> usize {
        self.doc.flows.iter().map(|f| f.steps.len()).sum()
    }

    /// A question's compiled regex.
    pub fn regex(&self, pattern: &str) -> Option<&regex::Regex> {
        self.regexes.get(pattern)
    }
}

fn patterns(
    target: usize,
    keywords: &[String],
    mode: super::document::MatchMode,
    regex: Option<&str>,
) -> Vec<(usize, Pattern)> {
    let mut out: Vec<(usize, Pattern)> = keywords
        .iter()
        .map(|k| {
            (
                target,
                Pattern::Keyword {
                    text: k.clone(),
                    mode,
                },
            )
        })
        .collect();
    if let Some(regex) = regex {
        out.push((target, Pattern::Regex(regex.to_owned())));
    }
    out
}

/// Where a problem is.
#[derive(Debug, Clone, Default)]
struct At {
    flow: Option<String>,
    step: Option<String>,
}

/// Collects every problem of a document while compiling its templates and regexes.
struct Validator<'a> {
    doc: &'a Document,
    caps: Capabilities,
    errors: Vec<FlowError>,
    templates: Templates,
    regexes: HashMap<String, regex::Regex>,
    hours: Option<BusinessHours>,
    /// (where, field, source, is_expression) for the variable check at the end.
    sources: Vec<(At, String, String, bool)>,
    assigned: BTreeSet<String>,
}

impl<'a> Validator<'a> {
    fn new(doc: &'a Document, caps: Capabilities) -> Self {
        Self {
            doc,
            caps,
            errors: Vec::new(),
            templates: Templates::new(),
            regexes: HashMap::new(),
            hours: None,
            sources: Vec::new(),
            assigned: BTreeSet::new(),
        }
    }

    fn error(&mut self, at: &At, field: Option<&str>, message: impl Into<String>) {
        self.errors.push(FlowError {
            flow: at.flow.clone(),
            step: at.step.clone(),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    fn flow_exists(&self, id: &str) -> bool {
        self.doc.flows.iter().any(|f| f.id == id)
    }

    fn check_flow_ref(&mut self, at: &At, field: &str, id: &str) {
        if !self.flow_exists(id) {
            self.error(
                at,
                Some(field),
                format!("refers to flow {id:?}, which does not exist"),
            );
        }
    }

    fn check_step_ref(&mut self, at: &At, flow: &Flow, field: &str, id: &str) {
        if !flow.steps.iter().any(|s| s.id() == id) {
            self.error(
                at,
                Some(field),
                format!("refers to step {id:?}, which is not in flow {:?}", flow.id),
            );
        }
    }

    /// Exactly one of a step or a flow target.
    fn check_target(
        &mut self,
        at: &At,
        flow: &Flow,
        field: &str,
        step: Option<&str>,
        target_flow: Option<&str>,
    ) {
        match (step, target_flow) {
            (Some(step), None) => self.check_step_ref(at, flow, &format!("{field}step"), step),
            (None, Some(id)) => self.check_flow_ref(at, &format!("{field}flow"), id),
            _ => self.error(
                at,
                Some(field.trim_end_matches('.')).filter(|f| !f.is_empty()),
                "give exactly one of `step` or `flow`",
            ),
        }
    }

    fn text(&mut self, at: &At, field: &str, source: &str) {
        match self.templates.add_text(source) {
            Ok(()) => match self.templates.dry_run(source, false) {
                Ok(()) => {
                    self.sources
                        .push((at.clone(), field.to_owned(), source.to_owned(), false))
                }
                Err(err) => self.error(at, Some(field), format!("template error: {err}")),
            },
            Err(err) => self.error(at, Some(field), format!("template syntax error: {err}")),
        }
    }

    fn expression(&mut self, at: &At, field: &str, source: &str) {
        if source.trim().is_empty() {
            self.error(at, Some(field), "the expression is empty");
            return;
        }
        match self.templates.add_expression(source) {
            Ok(()) => match self.templates.dry_run(source, true) {
                Ok(()) => {
                    self.sources
                        .push((at.clone(), field.to_owned(), source.to_owned(), true))
                }
                Err(err) => self.error(at, Some(field), format!("expression error: {err}")),
            },
            Err(err) => self.error(at, Some(field), format!("expression syntax error: {err}")),
        }
    }

    fn regex(&mut self, at: &At, field: &str, pattern: &str) {
        match compile_regex(pattern) {
            Ok(re) => {
                self.regexes.insert(pattern.to_owned(), re);
            }
            Err(err) => self.error(at, Some(field), format!("invalid regex: {err}")),
        }
    }

    fn var_name(&mut self, at: &At, field: &str, name: &str) {
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            self.assigned.insert(name.to_owned());
        } else {
            self.error(
                at,
                Some(field),
                format!("{name:?} is not a variable name: use letters, digits and _"),
            );
        }
    }

    fn run(&mut self) {
        let doc = self.doc;
        let top = At::default();
        if doc.flows.is_empty() {
            self.error(&top, Some("flows"), "a document needs at least one flow");
        }
        let expiry = doc.expiry.0;
        if expiry < Duration::from_secs(60) || expiry > Duration::from_secs(30 * 86_400) {
            self.error(&top, Some("expiry"), "must be between 1m and 30d");
        }
        if let Some(id) = &doc.default_flow {
            self.check_flow_ref(&top, "default_flow", id);
        }
        if let Some(ooh) = &doc.out_of_hours {
            match (&ooh.flow, &ooh.message) {
                (Some(id), None) => self.check_flow_ref(&top, "out_of_hours.flow", id),
                (None, Some(message)) => self.text(&top, "out_of_hours.message", message),
                _ => self.error(
                    &top,
                    Some("out_of_hours"),
                    "give exactly one of `flow` or `message`",
                ),
            }
            if doc.hours.is_none() {
                self.error(
                    &top,
                    Some("out_of_hours"),
                    "needs [hours] to know when the business is closed",
                );
            }
        }
        if let Some(hours) = &doc.hours {
            match BusinessHours::compile(hours) {
                Ok(compiled) => self.hours = Some(compiled),
                Err((field, message)) => self.error(&top, Some(&field), message),
            }
        }
        for (index, command) in doc.commands.iter().enumerate() {
            let field = format!("commands[{index}]");
            if command.keywords.is_empty() {
                self.error(&top, Some(&field), "needs at least one keyword");
            }
            for keyword in &command.keywords {
                if fold(keyword).is_empty() {
                    self.error(
                        &top,
                        Some(&format!("{field}.keywords")),
                        format!("{keyword:?} has no letters or digits"),
                    );
                }
            }
            match (&command.flow, command.end) {
                (Some(id), false) => self.check_flow_ref(&top, &format!("{field}.flow"), id),
                (None, true) => {}
                _ => self.error(
                    &top,
                    Some(&field),
                    "give exactly one of `flow = \"...\"` or `end = true`",
                ),
            }
            if let Some(message) = &command.message {
                self.text(&top, &format!("{field}.message"), message);
            }
        }
        let mut seen = HashSet::new();
        for flow in &doc.flows {
            if !seen.insert(flow.id.as_str()) {
                self.error(
                    &At {
                        flow: Some(flow.id.clone()),
                        step: None,
                    },
                    Some("id"),
                    "duplicate flow id",
                );
            }
            self.flow(flow);
        }
        self.loops();
        self.variables();
    }

    fn flow(&mut self, flow: &Flow) {
        let at = At {
            flow: Some(flow.id.clone()),
            step: None,
        };
        if !valid_id(&flow.id) {
            self.error(
                &at,
                Some("id"),
                format!(
                    "{:?} is not a valid id: use 1 to 64 letters, digits, '_' or '-'",
                    flow.id
                ),
            );
        }
        if flow.steps.is_empty() {
            self.error(&at, Some("steps"), "a flow needs at least one step");
        }
        for (index, trigger) in flow.triggers.iter().enumerate() {
            let field = format!("triggers[{index}]");
            match (trigger.keywords.is_empty(), &trigger.regex) {
                (false, None) => {
                    for keyword in &trigger.keywords {
                        if fold(keyword).is_empty() {
                            self.error(
                                &at,
                                Some(&format!("{field}.keywords")),
                                format!("{keyword:?} has no letters or digits"),
                            );
                        }
                    }
                }
                (true, Some(regex)) => self.regex(&at, &format!("{field}.regex"), regex),
                _ => self.error(
                    &at,
                    Some(&field),
                    "give exactly one of `keywords` or `regex`",
                ),
            }
        }
        if let Some(idle) = &flow.idle {
            if idle.after.0 < Duration::from_secs(10) || idle.after.0 > MAX_WAIT {
                self.error(&at, Some("idle.after"), "must be between 10s and 30d");
            }
            if idle
                .end_after
                .is_some_and(|d| d.0 < Duration::from_secs(10) || d.0 > MAX_WAIT)
            {
                self.error(&at, Some("idle.end_after"), "must be between 10s and 30d");
            }
            if let Some(reminder) = &idle.reminder {
                self.text(&at, "idle.reminder", reminder);
            }
            if let Some(message) = &idle.end_message {
                self.text(&at, "idle.end_message", message);
            }
        }
        let mut ids = HashSet::new();
        for step in &flow.steps {
            let at = At {
                flow: Some(flow.id.clone()),
                step: Some(step.id().to_owned()),
            };
            if !ids.insert(step.id()) {
                self.error(&at, Some("id"), "duplicate step id in this flow");
            }
            if !valid_id(step.id()) {
                self.error(
                    &at,
                    Some("id"),
                    format!(
                        "{:?} is not a valid id: use 1 to 64 letters, digits, '_' or '-'",
                        step.id()
                    ),
                );
            }
            self.step(flow, &at, step);
        }
        self.reachability(flow);
    }

    fn step(&mut self, flow: &Flow, at: &At, step: &Step) {
        if let Some(next) = next_of(step) {
            self.check_step_ref(at, flow, "next", next);
        }
        match step {
            Step::Message {
                text, media, delay, ..
            } => {
                if text.is_empty() {
                    self.error(at, Some("text"), "give at least one text");
                }
                for (i, t) in text.iter().enumerate() {
                    self.text(at, &format!("text[{i}]"), t);
                }
                if let Some(media) = media {
                    self.url(at, "media.url", &media.url);
                    if let Some(caption) = &media.caption {
                        self.text(at, "media.caption", caption);
                    }
                }
                if delay.is_some_and(|d| d.0 > MAX_DELAY) {
                    self.error(at, Some("delay"), "must be at most 30s");
                }
            }
            Step::Question {
                text,
                var,
                validate,
                retry,
                on_fail,
                ..
            } => {
                self.text(at, "text", text);
                self.var_name(at, "var", var);
                if let Some(retry) = retry {
                    self.text(at, "retry", retry);
                }
                if let Some(id) = on_fail {
                    self.check_step_ref(at, flow, "on_fail", id);
                }
                self.validation(at, validate);
            }
            Step::Menu {
                text,
                options,
                var,
                retry,
                on_fail,
                ..
            } => {
                self.text(at, "text", text);
                if let Some(var) = var {
                    self.var_name(at, "var", var);
                }
                if let Some(retry) = retry {
                    self.text(at, "retry", retry);
                }
                if let Some(id) = on_fail {
                    self.check_step_ref(at, flow, "on_fail", id);
                }
                if options.is_empty() || options.len() > 20 {
                    self.error(at, Some("options"), "a menu needs 1 to 20 options");
                }
                let mut option_ids = HashSet::new();
                for (i, option) in options.iter().enumerate() {
                    let field = format!("options[{i}].");
                    self.check_target(
                        at,
                        flow,
                        &field,
                        option.step.as_deref(),
                        option.flow.as_deref(),
                    );
                    let id = option.id.clone().unwrap_or_else(|| (i + 1).to_string());
                    if !option_ids.insert(id.clone()) {
                        self.error(
                            at,
                            Some(&format!("options[{i}].id")),
                            format!("duplicate option id {id:?}"),
                        );
                    }
                    if fold(&option.label).is_empty() {
                        self.error(
                            at,
                            Some(&format!("options[{i}].label")),
                            "needs letters or digits",
                        );
                    }
                }
            }
            Step::Condition { branches, .. } => {
                if branches.is_empty() {
                    self.error(
                        at,
                        Some("branches"),
                        "a condition needs at least one branch",
                    );
                }
                for (i, branch) in branches.iter().enumerate() {
                    let field = format!("branches[{i}].");
                    self.expression(at, &format!("{field}when"), &branch.when);
                    self.check_target(
                        at,
                        flow,
                        &field,
                        branch.step.as_deref(),
                        branch.flow.as_deref(),
                    );
                }
            }
            Step::Action {
                set,
                http,
                create_order,
                notify,
                llm,
                ..
            } => {
                let given = [
                    set.is_some(),
                    http.is_some(),
                    create_order.is_some(),
                    notify.is_some(),
                    llm.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    self.error(
                        at,
                        None,
                        "an action does exactly one of: set, http, create_order, notify, llm",
                    );
                }
                for (name, payload) in [
                    ("create_order", create_order),
                    ("notify", notify),
                    ("llm", llm),
                ] {
                    if let Some(payload) = payload {
                        if !payload.is_object() {
                            self.error(at, Some(name), "must be a table of parameters");
                        }
                        self.payload_templates(at, name, payload);
                    }
                }
                for (name, present, supported) in [
                    (
                        "create_order",
                        create_order.is_some(),
                        self.caps.create_order,
                    ),
                    ("notify", notify.is_some(), self.caps.notify),
                    ("llm", llm.is_some(), self.caps.llm),
                ] {
                    if present && !supported {
                        self.error(
                            at,
                            Some(name),
                            format!("`{name}` actions are not supported by this release yet"),
                        );
                    }
                }
                if let Some(set) = set {
                    if set.is_empty() {
                        self.error(at, Some("set"), "give at least one variable");
                    }
                    for (name, value) in set {
                        let field = format!("set.{name}");
                        self.var_name(at, &field, name);
                        match value {
                            serde_json::Value::String(text) => self.text(at, &field, text),
                            serde_json::Value::Object(map) => match (map.get("expr"), map.len()) {
                                (Some(serde_json::Value::String(expr)), 1) => {
                                    self.expression(at, &field, expr)
                                }
                                _ => self.error(
                                    at,
                                    Some(&field),
                                    "a table value must be exactly { expr = \"...\" }",
                                ),
                            },
                            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
                            _ => self.error(
                                at,
                                Some(&field),
                                "use a string template, a number, a boolean or { expr = \"...\" }",
                            ),
                        }
                    }
                }
                if let Some(http) = http {
                    let method = http.method.to_ascii_uppercase();
                    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                        self.error(
                            at,
                            Some("http.method"),
                            format!(
                                "{:?} is not one of GET, POST, PUT, PATCH, DELETE",
                                http.method
                            ),
                        );
                    }
                    self.url(at, "http.url", &http.url);
                    for (name, value) in &http.headers {
                        self.text(at, &format!("http.headers.{name}"), value);
                    }
                    if let Some(body) = &http.body {
                        self.text(at, "http.body", body);
                    }
                    if http
                        .timeout
                        .is_some_and(|t| t.0 > MAX_HTTP_TIMEOUT || t.0.is_zero())
                    {
                        self.error(at, Some("http.timeout"), "must be between 1s and 60s");
                    }
                    for (name, path) in &http.save {
                        self.var_name(at, &format!("http.save.{name}"), name);
                        if path.trim().is_empty() {
                            self.error(
                                at,
                                Some(&format!("http.save.{name}")),
                                "give a response path, e.g. data.id",
                            );
                        }
                    }
                    if let Some(id) = &http.on_error {
                        self.check_step_ref(at, flow, "http.on_error", id);
                    }
                }
            }
            Step::Handoff { text, resume, .. } => {
                if let Some(text) = text {
                    self.text(at, "text", text);
                }
                if let Some(id) = resume {
                    self.check_step_ref(at, flow, "resume", id);
                }
            }
            Step::Goto {
                step, flow: target, ..
            } => {
                self.check_target(at, flow, "", step.as_deref(), target.as_deref());
            }
            Step::End { text, .. } => {
                if let Some(text) = text {
                    self.text(at, "text", text);
                }
            }
        }
    }

    /// Validates every string inside an action's parameters as a template.
    fn payload_templates(&mut self, at: &At, field: &str, value: &serde_json::Value) {
        match value {
            serde_json::Value::String(text) => self.text(at, field, text),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.payload_templates(at, &format!("{field}[{i}]"), item);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    self.payload_templates(at, &format!("{field}.{key}"), item);
                }
            }
            _ => {}
        }
    }

    fn url(&mut self, at: &At, field: &str, url: &str) {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            self.error(at, Some(field), "must start with https:// or http://");
        }
        self.text(at, field, url);
    }

    fn validation(&mut self, at: &At, rule: &Validation) {
        match rule {
            Validation::Text { min, max } => {
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    self.error(at, Some("validate"), "min is greater than max");
                }
            }
            Validation::Number { min, max, .. } => {
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    self.error(at, Some("validate"), "min is greater than max");
                }
            }
            Validation::Phone {
                country_code: Some(code),
            } => {
                let digits = code.trim_start_matches('+');
                if digits.is_empty()
                    || digits.len() > 3
                    || !digits.chars().all(|c| c.is_ascii_digit())
                {
                    self.error(
                        at,
                        Some("validate.country_code"),
                        format!("{code:?} is not a country calling code, e.g. 54"),
                    );
                }
            }
            Validation::Date { formats, .. } => {
                if formats.is_empty() {
                    self.error(at, Some("validate.formats"), "give at least one format");
                }
                for format in formats {
                    use chrono::format::{Item, StrftimeItems};
                    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
                        self.error(
                            at,
                            Some("validate.formats"),
                            format!("{format:?} is not a valid date format"),
                        );
                    }
                }
            }
            Validation::Regex { pattern } => {
                // An answer must match as a whole, not merely contain a match.
                match compile_regex(&format!("^(?:{pattern})$")) {
                    Ok(re) => {
                        self.regexes.insert(pattern.clone(), re);
                    }
                    Err(err) => self.error(
                        at,
                        Some("validate.pattern"),
                        format!("invalid regex: {err}"),
                    ),
                }
            }
            Validation::Choices { choices } => {
                if choices.is_empty() {
                    self.error(at, Some("validate.choices"), "give at least one choice");
                }
            }
            Validation::Email | Validation::Phone { country_code: None } => {}
        }
    }

    /// Every step must be reachable from the flow's first step.
    fn reachability(&mut self, flow: &Flow) {
        let Some(first) = flow.steps.first() else {
            return;
        };
        let mut reached: HashSet<&str> = HashSet::new();
        let mut stack = vec![first.id()];
        while let Some(id) = stack.pop() {
            if !reached.insert(id) {
                continue;
            }
            let Some(index) = flow.steps.iter().position(|s| s.id() == id) else {
                continue;
            };
            for edge in edges(flow, index) {
                if let Edge::Step(target) = edge {
                    stack.push(target);
                }
            }
        }
        for step in &flow.steps {
            if !reached.contains(step.id()) {
                let at = At {
                    flow: Some(flow.id.clone()),
                    step: Some(step.id().to_owned()),
                };
                self.error(
                    &at,
                    None,
                    "this step is never reached from the flow's first step",
                );
            }
        }
    }

    /// A cycle through steps that never wait for the customer would run forever.
    fn loops(&mut self) {
        let doc = self.doc;
        let flows: HashMap<&str, &Flow> = doc.flows.iter().map(|f| (f.id.as_str(), f)).collect();
        let node = |flow: &str, step: &str| format!("{flow}\u{0}{step}");
        let mut graph: HashMap<String, Vec<String>> = HashMap::new();
        for flow in &doc.flows {
            for (index, step) in flow.steps.iter().enumerate() {
                if step.waits() {
                    continue;
                }
                let targets = edges(flow, index)
                    .into_iter()
                    .filter_map(|edge| {
                        let (f, s) = match edge {
                            Edge::Step(s) => (flow, flow.steps.iter().find(|x| x.id() == s)?),
                            Edge::Flow(f) => {
                                let f = flows.get(f)?;
                                (*f, f.steps.first()?)
                            }
                        };
                        (!s.waits()).then(|| node(&f.id, s.id()))
                    })
                    .collect();
                graph.insert(node(&flow.id, step.id()), targets);
            }
        }
        // Iterative depth-first search with colours: grey on the stack, black done.
        let mut colour: HashMap<&str, u8> = HashMap::new();
        let mut reported = false;
        let mut keys: Vec<&String> = graph.keys().collect();
        keys.sort();
        for start in keys {
            if colour.contains_key(start.as_str()) || reported {
                continue;
            }
            let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
            colour.insert(start.as_str(), 1);
            while let Some((current, child)) = stack.pop() {
                let children = graph.get(current).map(Vec::as_slice).unwrap_or(&[]);
                if let Some(next) = children.get(child) {
                    stack.push((current, child + 1));
                    match colour.get(next.as_str()) {
                        Some(1) => {
                            let (flow, step) = next.split_once('\u{0}').unwrap_or((next, ""));
                            let at = At {
                                flow: Some(flow.to_owned()),
                                step: Some(step.to_owned()),
                            };
                            self.error(&at, None, "this step is part of a loop with no question, menu or handoff: it would run forever");
                            reported = true;
                            break;
                        }
                        Some(_) => {}
                        None => {
                            colour.insert(next.as_str(), 1);
                            stack.push((next.as_str(), 0));
                        }
                    }
                } else {
                    colour.insert(current, 2);
                }
            }
        }
    }

    /// Templates may only read known names, and `vars.X` only when something assigns X.
    fn variables(&mut self) {
        let sources = std::mem::take(&mut self.sources);
        for (at, field, source, is_expression) in &sources {
            for name in self.templates.variables(source, *is_expression) {
                let mut parts = name.split('.');
                let root = parts.next().unwrap_or_default();
                if !KNOWN_ROOTS.contains(&root) {
                    self.error(
                        at,
                        Some(field),
                        format!(
                            "unknown variable `{root}`: use contact, bot, vars, now, input or flow"
                        ),
                    );
                } else if root == "vars"
                    && let Some(var) = parts.next()
                    && !self.assigned.contains(var)
                {
                    self.error(
                        at,
                        Some(field),
                        format!(
                            "`vars.{var}` is never set by any question, menu, action or http save"
                        ),
                    );
                }
            }
        }
    }
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Where control can go from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge<'a> {
    Step(&'a str),
    Flow(&'a str),
}

fn next_of(step: &Step) -> Option<&str> {
    match step {
        Step::Message { next, .. }
        | Step::Question { next, .. }
        | Step::Condition { next, .. }
        | Step::Action { next, .. } => next.as_deref(),
        _ => None,
    }
}

/// The step after `index` when none is named: the following one, if any.
fn fallthrough(flow: &Flow, index: usize) -> Option<&str> {
    flow.steps.get(index + 1).map(Step::id)
}

fn edges<'f>(flow: &'f Flow, index: usize) -> Vec<Edge<'f>> {
    let step = &flow.steps[index];
    let mut out = Vec::new();
    let continuation: Option<&str> = next_of(step).or_else(|| fallthrough(flow, index));
    let continue_to = |out: &mut Vec<Edge<'f>>| {
        if let Some(next) = continuation {
            out.push(Edge::Step(next));
        }
    };
    match step {
        Step::Message { .. } => continue_to(&mut out),
        Step::Question { on_fail, .. } => {
            continue_to(&mut out);
            if let Some(id) = on_fail {
                out.push(Edge::Step(id));
            }
        }
        Step::Menu {
            options, on_fail, ..
        } => {
            for option in options {
                if let Some(id) = &option.step {
                    out.push(Edge::Step(id));
                } else if let Some(id) = &option.flow {
                    out.push(Edge::Flow(id));
                }
            }
            if let Some(id) = on_fail {
                out.push(Edge::Step(id));
            }
        }
        Step::Condition { branches, .. } => {
            for branch in branches {
                if let Some(id) = &branch.step {
                    out.push(Edge::Step(id));
                } else if let Some(id) = &branch.flow {
                    out.push(Edge::Flow(id));
                }
            }
            continue_to(&mut out);
        }
        Step::Action { http, .. } => {
            continue_to(&mut out);
            if let Some(id) = http.as_ref().and_then(|h| h.on_error.as_deref()) {
                out.push(Edge::Step(id));
            }
        }
        Step::Handoff { resume, .. } => {
            if let Some(id) = resume {
                out.push(Edge::Step(id));
            }
        }
        Step::Goto {
            step, flow: target, ..
        } => {
            if let Some(id) = step {
                out.push(Edge::Step(id));
            } else if let Some(id) = target {
                out.push(Edge::Flow(id));
            }
        }
        Step::End { .. } => {}
    }
    out
}
