//! Validation and compilation of a flow document into a [`Bundle`]: every reference
//! resolved, every template, expression and regex compiled, every trigger folded into
//! one matcher. A document that compiles cannot fail on these at run time; every
//! problem found is reported, each naming its flow, step and field. Compiling also
//! checks the document against the fan-out [`Limits`]: no straight-line path (steps run
//! without waiting for the customer) may send more messages, make more HTTP requests or
//! run more steps than one inbound event is allowed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::document::{Document, Flow, FlowError, Step, Validation};
use super::engine::Limits;
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
    /// What this release executes: `set`, `http` and `create_order`.
    pub const CURRENT: Capabilities = Capabilities {
        create_order: true,
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
/// Most distinct templates and expressions in one document. Each costs about 10 KiB
/// compiled, so this bounds a document's compiled size to about 20 MiB.
pub const MAX_TEMPLATES: usize = 2_000;

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
    /// Validates and compiles `doc` within the default [`Limits`]. All problems are
    /// returned, not only the first.
    pub fn compile(
        doc: Document,
        version: u32,
        caps: Capabilities,
    ) -> Result<Bundle, Vec<FlowError>> {
        Bundle::compile_within(doc, version, caps, &Limits::default())
    }

    /// Validates and compiles `doc`, and checks it against `limits` (the limits the
    /// engine will run it within, see [`Bundle::check_limits`]).
    pub fn compile_within(
        doc: Document,
        version: u32,
        caps: Capabilities,
        limits: &Limits,
    ) -> Result<Bundle, Vec<FlowError>> {
        let bundle = Bundle::compile_unchecked(doc, version, caps)?;
        let errors = bundle.check_limits(limits);
        if errors.is_empty() {
            Ok(bundle)
        } else {
            Err(errors)
        }
    }

    fn compile_unchecked(
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

    /// Parses, then compiles within the default [`Limits`].
    pub fn from_text(
        text: &str,
        version: u32,
        caps: Capabilities,
    ) -> Result<Bundle, Vec<FlowError>> {
        Bundle::from_text_within(text, version, caps, &Limits::default())
    }

    /// Parses, then compiles within `limits`.
    pub fn from_text_within(
        text: &str,
        version: u32,
        caps: Capabilities,
        limits: &Limits,
    ) -> Result<Bundle, Vec<FlowError>> {
        let doc =
            Document::parse(text, super::document::Format::sniff(text)).map_err(|err| vec![err])?;
        Bundle::compile_within(doc, version, caps, limits)
    }

    /// Checks that no straight-line path (steps that run one after another without
    /// waiting for the customer; an HTTP request does not count as waiting, its result
    /// goes on with the same inbound event) sends more than `limits.max_messages`
    /// messages, makes more than `limits.max_http` HTTP requests or runs more than
    /// `limits.max_steps` steps. Each excess is reported once, at the step (or command)
    /// where the longest such path starts.
    pub fn check_limits(&self, limits: &Limits) -> Vec<FlowError> {
        let paths = StraightPaths::of(&self.doc, self);
        let mut errors = Vec::new();
        let metrics: [(&str, &str, u32, Metric); 3] = [
            (
                "messages can be sent",
                "pipeline.max_messages_per_event",
                limits.max_messages,
                |c| c.messages,
            ),
            (
                "HTTP requests can be made",
                "pipeline.max_http_per_event",
                limits.max_http,
                |c| c.http,
            ),
            (
                "steps can run",
                "pipeline.max_steps_per_event",
                limits.max_steps,
                |c| c.steps,
            ),
        ];
        for (what, key, limit, metric) in metrics {
            let Some((start, worst)) = paths.worst(metric) else {
                continue;
            };
            if worst <= u64::from(limit) {
                continue;
            }
            let message = format!(
                "from here, {worst} {what} without waiting for the customer, more than the limit of {limit} for one inbound message ({key})"
            );
            errors.push(match start {
                Start::Step((flow, step)) => {
                    let flow = &self.doc.flows[flow];
                    FlowError {
                        flow: Some(flow.id.clone()),
                        step: Some(flow.steps[step].id().to_owned()),
                        field: None,
                        message,
                    }
                }
                Start::Command(index) => FlowError {
                    flow: None,
                    step: None,
                    field: Some(format!("commands[{index}]")),
                    message,
                },
            });
        }
        errors
    }

    /// An estimate of the memory this compiled document holds, for caches that keep
    /// compiled flows under a memory budget: the document itself, every compiled
    /// template and expression, regexes and keywords, plus fixed overheads per step and
    /// flow. It errs on the high side.
    pub fn approx_size_bytes(&self) -> usize {
        // Measured on minijinja 3 and regex 1 (live heap after compiling the examples):
        // about 9.5 KiB per compiled template plus 2 bytes per source byte, and about
        // 20 KiB per regex; rounded up.
        const FIXED: usize = 16 * 1024;
        const PER_FLOW: usize = 1024;
        const PER_STEP: usize = 256;
        const PER_TEMPLATE: usize = 10 * 1024;
        const PER_REGEX: usize = 24 * 1024;
        // A parsed document holds its strings plus collection overheads; its JSON is a
        // close measure of the strings.
        let document = serde_json::to_vec(&self.doc).map_or(0, |json| json.len());
        let templates = 4 * self.templates.source_bytes() + PER_TEMPLATE * self.templates.len();
        let regex_sources = self.regexes.keys().map(String::len).sum::<usize>()
            + self
                .doc
                .flows
                .iter()
                .flat_map(|f| &f.triggers)
                .filter_map(|t| t.regex.as_deref())
                .map(str::len)
                .sum::<usize>();
        let regex_count = self.regexes.len()
            + self
                .doc
                .flows
                .iter()
                .flat_map(|f| &f.triggers)
                .filter(|t| t.regex.is_some())
                .count();
        let regexes = 16 * regex_sources + PER_REGEX * regex_count;
        let keywords: usize = self
            .doc
            .flows
            .iter()
            .flat_map(|f| &f.triggers)
            .flat_map(|t| &t.keywords)
            .chain(self.doc.commands.iter().flat_map(|c| &c.keywords))
            .map(|k| 8 * k.len() + 64)
            .sum();
        FIXED
            + 2 * document
            + templates
            + regexes
            + keywords
            + PER_FLOW * self.doc.flows.len()
            + PER_STEP * self.step_count()
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

/// What a step costs against the fan-out [`Limits`], or the most a path from it costs.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    messages: u64,
    http: u64,
    steps: u64,
}

/// One measure of a [`Cost`].
type Metric = fn(&Cost) -> u64;

/// Where a straight-line path starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    Step(Pos),
    Command(usize),
}

/// The most every straight-line path from each step costs, per metric.
struct StraightPaths {
    /// Per step, per metric: the most a path from it costs.
    from_step: Vec<Vec<Cost>>,
    /// Per command that sends a message and starts a flow: that, plus the flow's paths.
    from_command: Vec<(usize, Cost)>,
}

impl StraightPaths {
    fn of(doc: &Document, bundle: &Bundle) -> StraightPaths {
        let own = |step: &Step| -> Cost {
            let sends = match step {
                Step::Message { text, .. } => text.len() as u64,
                Step::Question { .. } | Step::Menu { .. } => 1,
                Step::Handoff { text, .. } | Step::End { text, .. } => u64::from(text.is_some()),
                Step::Condition { .. } | Step::Action { .. } | Step::Goto { .. } => 0,
            };
            let http = matches!(step, Step::Action { http: Some(_), .. });
            Cost {
                messages: sends,
                http: u64::from(http),
                steps: 1,
            }
        };
        let successors = |(f, s): Pos| -> Vec<Pos> {
            let flow = &doc.flows[f];
            if flow.steps[s].waits() {
                return Vec::new();
            }
            edges(flow, s)
                .into_iter()
                .filter_map(|edge| match edge {
                    Edge::Step(id) => bundle.step(f, id),
                    Edge::Flow(id) => bundle
                        .flow(id)
                        .filter(|&i| !doc.flows[i].steps.is_empty())
                        .map(|i| (i, 0)),
                })
                .collect()
        };
        // Longest paths in the graph of steps that do not wait, by an iterative
        // depth-first search; validation rejected cycles, and a cycle met anyway (a
        // back edge) adds nothing.
        let mut best: Vec<Vec<Option<Cost>>> = doc
            .flows
            .iter()
            .map(|f| vec![None; f.steps.len()])
            .collect();
        let mut on_stack: Vec<Vec<bool>> = doc
            .flows
            .iter()
            .map(|f| vec![false; f.steps.len()])
            .collect();
        for (f, flow) in doc.flows.iter().enumerate() {
            for s in 0..flow.steps.len() {
                if best[f][s].is_some() {
                    continue;
                }
                let mut stack: Vec<(Pos, Vec<Pos>, usize)> = vec![((f, s), successors((f, s)), 0)];
                on_stack[f][s] = true;
                while let Some((pos, next, index)) = stack.last_mut() {
                    if let Some(&child) = next.get(*index) {
                        *index += 1;
                        if best[child.0][child.1].is_none() && !on_stack[child.0][child.1] {
                            on_stack[child.0][child.1] = true;
                            let children = successors(child);
                            stack.push((child, children, 0));
                        }
                        continue;
                    }
                    let pos = *pos;
                    let mut most = Cost::default();
                    for child in next.iter() {
                        if let Some(cost) = best[child.0][child.1] {
                            most.messages = most.messages.max(cost.messages);
                            most.http = most.http.max(cost.http);
                            most.steps = most.steps.max(cost.steps);
                        }
                    }
                    let step = own(&doc.flows[pos.0].steps[pos.1]);
                    best[pos.0][pos.1] = Some(Cost {
                        messages: step.messages + most.messages,
                        http: step.http + most.http,
                        steps: step.steps + most.steps,
                    });
                    on_stack[pos.0][pos.1] = false;
                    stack.pop();
                }
            }
        }
        let from_step: Vec<Vec<Cost>> = best
            .into_iter()
            .map(|costs| costs.into_iter().map(Option::unwrap_or_default).collect())
            .collect();
        let from_command = doc
            .commands
            .iter()
            .enumerate()
            .filter_map(|(index, command)| {
                let flow = bundle.flow(command.flow.as_deref()?)?;
                let first = from_step.get(flow)?.first().copied()?;
                Some((
                    index,
                    Cost {
                        messages: first.messages + u64::from(command.message.is_some()),
                        ..first
                    },
                ))
            })
            .collect();
        StraightPaths {
            from_step,
            from_command,
        }
    }

    /// Where the costliest path by `metric` starts, and its cost.
    fn worst(&self, metric: Metric) -> Option<(Start, u64)> {
        let steps = self.from_step.iter().enumerate().flat_map(|(f, costs)| {
            costs
                .iter()
                .enumerate()
                .map(move |(s, cost)| (Start::Step((f, s)), metric(cost)))
        });
        let commands = self
            .from_command
            .iter()
            .map(|(index, cost)| (Start::Command(*index), metric(cost)));
        // The first of equals wins, so the report points at the earliest step.
        steps.chain(commands).fold(
            None,
            |worst: Option<(Start, u64)>, (start, cost)| match worst {
                Some((_, most)) if most >= cost => worst,
                _ => Some((start, cost)),
            },
        )
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
    /// Set once [`MAX_TEMPLATES`] was reported.
    too_many_templates: bool,
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
            too_many_templates: false,
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

    /// Whether the document already holds [`MAX_TEMPLATES`] templates (reported once).
    fn template_cap_reached(&mut self, at: &At, field: &str) -> bool {
        if self.templates.len() < MAX_TEMPLATES {
            return false;
        }
        if !self.too_many_templates {
            self.too_many_templates = true;
            self.error(
                at,
                Some(field),
                format!("a document may hold at most {MAX_TEMPLATES} different templates and expressions"),
            );
        }
        true
    }

    fn text(&mut self, at: &At, field: &str, source: &str) {
        if self.template_cap_reached(at, field) {
            return;
        }
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
        if self.template_cap_reached(at, field) {
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
