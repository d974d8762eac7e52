//! Templates and expressions, on minijinja. Every template of a flow version is compiled
//! once, keyed by its own source text; conditions and `{ expr = ... }` values are
//! compiled as small templates too. Rendering is bounded by fuel, so a template cannot
//! loop forever; its output goes through a bounded writer, everything it prints
//! (captured blocks included) is counted against a second bound, and the builtins that can
//! build a large value from a small input (`range`, `replace`, `indent`, `join`,
//! `batch`, `format`, `list`, `string`, `pprint`, `tojson`) are replaced by versions that
//! refuse to go past the same bound. A template that fails at run time, or hits a bound,
//! yields a warning, never a crash. Operators (`*`, `~`, `+`) cannot be hooked: the
//! process that renders bounds them (see docs/flows.md).

use std::fmt::Write as _;
use std::io;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use minijinja::machinery::{Instruction, get_compiled_template};
use minijinja::value::{Kwargs, Rest, Serde, StringInput, Value, ValueOrKwargs};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior, filters};

/// Instructions a single render may execute.
pub const FUEL: u64 = 50_000;

/// Nesting depth of a render (loops, macros, calls).
pub const RECURSION_LIMIT: usize = 32;

/// Largest output of one render (a message text, a URL, a header, a body, an expression's
/// JSON), and of one value a bounded filter builds.
pub const MAX_RENDER_BYTES: usize = 64 * 1024;

/// Most bytes the `{{ ... }}` of one render may print in all, counting what `{% set %}`
/// blocks, `{% filter %}` blocks and macros capture (which the output bound does not see).
pub const MAX_PRINTED_BYTES: usize = 4 * MAX_RENDER_BYTES;

/// Most items `range()` gives.
pub const MAX_RANGE: usize = 1_000;

/// Most items `batch` and `list` build.
pub const MAX_ITEMS: usize = 10_000;

/// Largest width `indent`, `format` and `tojson` accept.
pub const MAX_WIDTH: usize = 256;

/// Top-level names templates may use: the scope, and minijinja's global functions.
pub const KNOWN_ROOTS: &[&str] = &[
    "contact",
    "bot",
    "vars",
    "now",
    "input",
    "flow",
    "range",
    "dict",
    "namespace",
];

/// Template tags that load another template. A template's name is its own source text,
/// so these could only reach other templates of the same document by accident: they are
/// refused at validation.
const LOADING_TAGS: &str = "`include`, `import`, `from ... import` and `extends`";

/// The compiled templates of one flow version.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// Templates and expressions compiled, and their source bytes.
    count: usize,
    source_bytes: usize,
}

/// What a template sees.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scope<'a> {
    pub contact: &'a serde_json::Value,
    pub bot: &'a serde_json::Value,
    pub vars: &'a serde_json::Map<String, serde_json::Value>,
    /// The current time in the bot's zone, RFC 3339.
    pub now: String,
    /// The message being handled (empty for timers).
    pub input: &'a str,
    pub flow: &'a str,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An environment with DashOffice's filters and limits and no templates yet.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        // Template names are their source text; never let a name ending in `.html` or
        // `.json` switch on escaping for a WhatsApp message.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // `none` (a missing JSON field, a failed expression) prints as nothing.
        env.set_formatter(|out, state, value| {
            if value.is_none() || value.is_undefined() {
                return Ok(());
            }
            count_printed(state, value)?;
            minijinja::escape_formatter(out, state, value)
        });
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        // `debug()` prints the whole context and the template's internals.
        env.remove_global("debug");
        env.add_function("range", range);
        env.add_filter("replace", replace);
        env.add_filter("indent", indent);
        env.add_filter("join", join);
        env.add_filter("batch", batch);
        env.add_filter("format", format);
        env.add_filter("list", list);
        env.add_filter("string", string);
        env.add_filter("pprint", pprint);
        env.add_filter("tojson", tojson);
        env.add_filter("money", money);
        env.add_filter("date", date);
        Self {
            env,
            count: 0,
            source_bytes: 0,
        }
    }

    /// Compiles a text template (`Hola {{ contact.name }}`).
    pub fn add_text(&mut self, source: &str) -> Result<(), String> {
        self.add(source.to_owned(), source.to_owned())
    }

    /// Compiles an expression (`vars.total > 100 and contact.vip`).
    pub fn add_expression(&mut self, expr: &str) -> Result<(), String> {
        self.add(expr_key(expr), format!("{{{{ ({expr}) | tojson }}}}"))
    }

    fn add(&mut self, name: String, source: String) -> Result<(), String> {
        if self.env.get_template(&name).is_ok() {
            return Ok(());
        }
        let bytes = name.len() + source.len();
        self.env
            .add_template_owned(name.clone(), source)
            .map_err(|err| describe(&err))?;
        if self.loads_templates(&name) {
            self.env.remove_template(&name);
            return Err(format!(
                "templates cannot use {LOADING_TAGS}: write the text in place"
            ));
        }
        self.count += 1;
        self.source_bytes += bytes;
        Ok(())
    }

    /// Whether a compiled template includes, imports or extends another one.
    fn loads_templates(&self, name: &str) -> bool {
        let Ok(template) = self.env.get_template(name) else {
            return false;
        };
        let compiled = get_compiled_template(&template);
        std::iter::once(&compiled.instructions)
            .chain(compiled.blocks.values())
            .any(|instructions| {
                (0..)
                    .map_while(|index| instructions.get(index))
                    .any(|i| matches!(i, Instruction::Include(_) | Instruction::LoadBlocks))
            })
    }

    /// Source bytes of every compiled template and expression.
    pub fn source_bytes(&self) -> usize {
        self.source_bytes
    }

    /// Compiled templates and expressions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is compiled.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Renders a compiled template through a writer bounded at [`MAX_RENDER_BYTES`].
    fn render_bounded(&self, name: &str, scope: &Scope<'_>) -> Result<String, String> {
        self.render_raw(name, scope)
            .map_err(|failure| match failure {
                Failure::Template(err) => describe(&err),
                Failure::Message(message) => message,
            })
    }

    fn render_raw(&self, name: &str, scope: &Scope<'_>) -> Result<String, Failure> {
        let template = self.env.get_template(name).map_err(Failure::Template)?;
        let mut out = BoundedWriter::default();
        let result = template.render_captured_to(Value::from(Serde(scope)), &mut out);
        if out.overflowed {
            return Err(Failure::Message(too_long("the output")));
        }
        result.map_err(Failure::Template)?;
        // Only whole `str`s are written, so the bytes are UTF-8; checked all the same.
        String::from_utf8(out.bytes).map_err(|err| Failure::Message(err.to_string()))
    }

    /// Variables a text template or expression reads, as dotted paths (`vars.name`).
    pub fn variables(&self, source: &str, is_expression: bool) -> Vec<String> {
        let key = if is_expression {
            expr_key(source)
        } else {
            source.to_owned()
        };
        let mut names: Vec<String> = self
            .env
            .get_template(&key)
            .map(|t| t.undeclared_variables(true).into_iter().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Renders a text template.
    pub fn render(&self, source: &str, scope: &Scope<'_>) -> Result<String, String> {
        self.render_bounded(source, scope)
    }

    /// Evaluates an expression to JSON.
    pub fn eval(&self, expr: &str, scope: &Scope<'_>) -> Result<serde_json::Value, String> {
        let json = self.render_bounded(&expr_key(expr), scope)?;
        if json.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&json).map_err(|err| format!("expression gave {json:?}: {err}"))
    }

    /// Renders with placeholder data to find mistakes only visible when running, such
    /// as an unknown filter. Other run-time errors depend on real data and are ignored.
    pub fn dry_run(&self, source: &str, is_expression: bool) -> Result<(), String> {
        let key = if is_expression {
            expr_key(source)
        } else {
            source.to_owned()
        };
        let empty = serde_json::Map::new();
        let sample = serde_json::json!({"phone": "+10000000000", "name": "Sample"});
        let scope = Scope {
            contact: &sample,
            bot: &sample,
            vars: &empty,
            now: "2026-01-01T00:00:00+00:00".into(),
            input: "",
            flow: "",
        };
        match self.render_raw(&key, &scope) {
            Err(Failure::Template(err))
                if matches!(
                    err.kind(),
                    ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
                ) =>
            {
                Err(describe(&err))
            }
            _ => Ok(()),
        }
    }
}

/// Why a render failed.
enum Failure {
    Template(Error),
    Message(String),
}

/// An output buffer that refuses to grow past [`MAX_RENDER_BYTES`].
#[derive(Default)]
struct BoundedWriter {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > MAX_RENDER_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("render output limit reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A string that refuses to grow past [`MAX_RENDER_BYTES`], for filters that build one.
#[derive(Default)]
struct BoundedString(String);

impl std::fmt::Write for BoundedString {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.0.len().saturating_add(s.len()) > MAX_RENDER_BYTES {
            return Err(std::fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

fn too_long(what: &str) -> String {
    format!("{what} would be longer than {MAX_RENDER_BYTES} bytes, the limit for a template")
}

fn limit_error(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// Fails unless a value of `len` bytes fits the render bound.
fn check_len(filter: &str, len: usize) -> Result<(), Error> {
    if len > MAX_RENDER_BYTES {
        Err(limit_error(too_long(&format!("the result of `{filter}`"))))
    } else {
        Ok(())
    }
}

fn check_width(filter: &str, width: usize) -> Result<(), Error> {
    if width > MAX_WIDTH {
        Err(limit_error(format!(
            "`{filter}`: width {width} is over the limit of {MAX_WIDTH}"
        )))
    } else {
        Ok(())
    }
}

/// Displays a value into a bounded string.
fn display_bounded(filter: &str, value: &Value, pretty: bool) -> Result<String, Error> {
    let mut out = BoundedString::default();
    let written = if pretty {
        write!(out, "{value:#?}")
    } else {
        write!(out, "{value}")
    };
    written.map_err(|_| limit_error(too_long(&format!("the result of `{filter}`"))))?;
    Ok(out.0)
}

/// `range()` with at most [`MAX_RANGE`] items.
fn range(lower: i64, upper: Option<i64>, step: Option<i64>) -> Result<Value, Error> {
    let (start, end) = match upper {
        Some(upper) => (lower, upper),
        None => (0, lower),
    };
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(limit_error("range: the step cannot be 0".into()));
    }
    let span = if step > 0 {
        end.saturating_sub(start)
    } else {
        start.saturating_sub(end)
    };
    let count = if span <= 0 {
        0
    } else {
        let magnitude = step.unsigned_abs();
        span.unsigned_abs().div_ceil(magnitude)
    };
    if count > MAX_RANGE as u64 {
        return Err(limit_error(format!(
            "range: {count} items is over the limit of {MAX_RANGE}"
        )));
    }
    // At most MAX_RANGE steps from `start`, so no overflow past what was checked.
    let items: Vec<Value> = (0..count)
        .map(|i| Value::from(start.saturating_add(step.saturating_mul(i as i64))))
        .collect();
    Ok(Value::from(items))
}

/// `replace` with its result size checked before it is built.
fn replace(
    state: &mut State<'_, '_>,
    value: StringInput<'_>,
    from: StringInput<'_>,
    to: StringInput<'_>,
) -> Result<Value, Error> {
    let text = value.as_str();
    let pattern = from.as_str();
    let matches = if pattern.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(pattern).count()
    };
    let size = (text.len() - matches * pattern.len())
        .saturating_add(matches.saturating_mul(to.as_str().len()));
    check_len("replace", size)?;
    filters::replace(state, value, from, to)
}

/// `indent` with a bounded width and result.
fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let width = match width {
        Some(width) => width,
        None => kwargs.get::<Option<usize>>("width")?.unwrap_or(4),
    };
    check_width("indent", width)?;
    let lines = value.as_str().matches('\n').count() + 1;
    check_len(
        "indent",
        value
            .as_str()
            .len()
            .saturating_add(lines.saturating_mul(width)),
    )?;
    filters::indent(value, Some(width), first, blank, kwargs)
}

/// `join`, built into a bounded string.
fn join(
    value: &Value,
    joiner: Option<String>,
    attribute: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let joiner = match joiner {
        Some(joiner) => joiner,
        None => kwargs.get::<Option<String>>("d")?.unwrap_or_default(),
    };
    let attribute = match attribute {
        Some(attribute) => Some(attribute),
        None => kwargs.get::<Option<String>>("attribute")?,
    };
    kwargs.assert_all_used()?;
    if value.is_undefined() || value.is_none() {
        return Ok(Value::from(""));
    }
    if let Some(text) = value.as_str() {
        // Joining a string joins its characters.
        let chars = text.chars().count();
        check_len(
            "join",
            text.len()
                .saturating_add(chars.saturating_mul(joiner.len())),
        )?;
    }
    let mut out = BoundedString::default();
    let overflow = |_| limit_error(too_long("the result of `join`"));
    for (index, item) in value.try_iter()?.enumerate() {
        let item = match &attribute {
            Some(path) => attribute_of(&item, path)?,
            None => item,
        };
        if index > 0 {
            out.write_str(&joiner).map_err(overflow)?;
        }
        match item.as_str() {
            Some(text) => out.write_str(text).map_err(overflow)?,
            None if item.is_none() || item.is_undefined() => {}
            None => write!(out, "{item}").map_err(overflow)?,
        }
    }
    Ok(Value::from(out.0))
}

/// `item.a.b` (numeric parts index sequences).
fn attribute_of(item: &Value, path: &str) -> Result<Value, Error> {
    let mut current = item.clone();
    for part in path.split('.') {
        current = match part.parse::<usize>() {
            Ok(index) => current.get_item_by_index(index)?,
            Err(_) => current.get_attr(part)?,
        };
    }
    Ok(current)
}

/// `batch` with a bounded batch size.
fn batch(
    state: &State<'_, '_>,
    value: Value,
    count: usize,
    fill_with: Option<Value>,
) -> Result<Value, Error> {
    if count > MAX_ITEMS {
        return Err(limit_error(format!(
            "batch: {count} is over the limit of {MAX_ITEMS} items"
        )));
    }
    filters::batch(state, value, count, fill_with)
}

/// `format` with bounded widths and precisions, and a bounded result.
fn format(
    state: &mut State<'_, '_>,
    format_str: &Value,
    args: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    if let Some(spec) = format_str.as_str() {
        check_printf_widths(spec)?;
    }
    let result = filters::format(state, format_str, args)?;
    if let Some(text) = result.as_str() {
        check_len("format", text.len())?;
    }
    Ok(result)
}

/// Adds what `value` prints to the render's running total, failing past
/// [`MAX_PRINTED_BYTES`].
fn count_printed(state: &mut State<'_, '_>, value: &Value) -> Result<(), Error> {
    const KEY: &str = "dash.printed_bytes";
    let len = match value.as_str() {
        Some(text) => text.len(),
        None => display_bounded("print", value, false)?.len(),
    };
    let before = state
        .get_temp(KEY)
        .and_then(|total| u64::try_from(total).ok())
        .unwrap_or(0);
    let total = before.saturating_add(len as u64);
    if total > MAX_PRINTED_BYTES as u64 {
        return Err(limit_error(format!(
            "the template printed more than {MAX_PRINTED_BYTES} bytes, the limit for one render"
        )));
    }
    state.set_temp(KEY, Value::from(total));
    Ok(())
}

/// Checks the width and precision of every `%` conversion of a printf-style format:
/// digits at most [`MAX_WIDTH`], and no `*` (a width taken from the data).
fn check_printf_widths(spec: &str) -> Result<(), Error> {
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            continue;
        }
        if chars.peek() == Some(&'(') {
            for c in chars.by_ref() {
                if c == ')' {
                    break;
                }
            }
        }
        while chars.peek().is_some_and(|c| "-+ #0".contains(*c)) {
            chars.next();
        }
        // Width, then an optional precision.
        for part in 0..2 {
            if part == 1 {
                if chars.peek() != Some(&'.') {
                    break;
                }
                chars.next();
            }
            if chars.peek() == Some(&'*') {
                return Err(limit_error(
                    "format: `*` widths are not supported; write the width in the format".into(),
                ));
            }
            let mut number = 0usize;
            while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
                number = number.saturating_mul(10).saturating_add(digit as usize);
                chars.next();
            }
            check_width("format", number)?;
        }
    }
    Ok(())
}

/// `list` with at most [`MAX_ITEMS`] items.
fn list(state: &State<'_, '_>, value: Value) -> Result<Value, Error> {
    let len = match value.as_str() {
        Some(text) => text.chars().count(),
        None => value.len().unwrap_or(0),
    };
    if len > MAX_ITEMS {
        return Err(limit_error(format!(
            "list: {len} items is over the limit of {MAX_ITEMS}"
        )));
    }
    filters::list(state, value)
}

/// `string`, displayed into a bounded string.
fn string(value: &Value) -> Result<Value, Error> {
    if value.as_str().is_some() {
        return Ok(value.clone());
    }
    display_bounded("string", value, false).map(Value::from)
}

/// `pprint`, displayed into a bounded string.
fn pprint(value: &Value) -> Result<Value, Error> {
    display_bounded("pprint", value, true).map(Value::from)
}

/// `tojson(indent=N)`, serialised into a bounded buffer. The JSON is not HTML-escaped:
/// nothing a flow renders is HTML.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(indent) => Some(indent),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(value) => match bool::try_from(value.clone()) {
            Ok(true) => Some(2),
            Ok(false) => None,
            Err(_) => Some(usize::try_from(value)?),
        },
    };
    let mut out = BoundedWriter::default();
    let written = match indent {
        None => serde_json::to_writer(&mut out, value),
        Some(width) => {
            check_width("tojson", width)?;
            let spaces = " ".repeat(width);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(value, &mut serializer)
        }
    };
    if out.overflowed {
        return Err(limit_error(too_long("the result of `tojson`")));
    }
    written.map_err(|err| {
        Error::new(ErrorKind::BadSerialization, "cannot serialize to JSON").with_source(err)
    })?;
    String::from_utf8(out.bytes)
        .map(Value::from_safe_string)
        .map_err(|err| Error::new(ErrorKind::BadSerialization, err.to_string()))
}

/// Whether an expression value counts as true (minijinja truthiness on JSON).
pub fn truthy(value: &serde_json::Value) -> bool {
    Value::from(Serde(value)).is_true()
}

fn expr_key(expr: &str) -> String {
    format!("expr:{expr}")
}

fn describe(err: &Error) -> String {
    let mut text = err.kind().to_string();
    if let Some(detail) = err.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = err.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// `{{ vars.total | money("ARS") }}` → `ARS 1,234.50`; `money("EUR", locale="es")` →
/// `EUR 1.234,50`; `decimals=0` drops cents. An empty or non-numeric value renders empty.
fn money(value: Value, currency: Option<String>, kwargs: Kwargs) -> Result<String, Error> {
    let locale: Option<String> = kwargs.get("locale")?;
    let decimals: Option<usize> = kwargs.get("decimals")?;
    kwargs.assert_all_used()?;
    // Arguments are checked before the value, so a dry run with no data finds mistakes.
    let decimals = decimals.unwrap_or(2).min(4);
    let (thousands, point) = match locale.as_deref() {
        Some("es" | "pt" | "de" | "it" | "fr") => ('.', ','),
        Some("en") | None => (',', '.'),
        Some(other) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("money: unknown locale {other:?} (use en, es, pt, de, it or fr)"),
            ));
        }
    };
    let Some(amount) = number_of(&value) else {
        return Ok(String::new());
    };
    let fixed = format!("{:.*}", decimals, amount.abs());
    let (int_part, frac_part) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let mut grouped = String::new();
    for (i, c) in int_part.chars().enumerate() {
        if i > 0 && (int_part.len() - i) % 3 == 0 {
            grouped.push(thousands);
        }
        grouped.push(c);
    }
    let sign = if amount < 0.0 { "-" } else { "" };
    let number = if frac_part.is_empty() {
        grouped
    } else {
        format!("{grouped}{point}{frac_part}")
    };
    Ok(match currency {
        Some(code) => format!("{sign}{code} {number}"),
        None => format!("{sign}{number}"),
    })
}

fn number_of(value: &Value) -> Option<f64> {
    if let Ok(n) = f64::try_from(value.clone()) {
        return Some(n);
    }
    value.as_str().and_then(|s| s.trim().parse().ok())
}

/// `{{ now | date }}` → `21/11/2026`; `date(format="%A %H:%M")`. Accepts RFC 3339
/// timestamps (shown in the bot's zone, `bot.timezone`) and `YYYY-MM-DD` dates.
fn date(state: &State<'_, '_>, value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let format: Option<String> = kwargs.get("format")?;
    kwargs.assert_all_used()?;
    let tz: Tz = state
        .lookup("bot")
        .and_then(|bot| bot.get_attr("timezone").ok())
        .and_then(|tz| tz.as_str().and_then(|name| name.parse().ok()))
        .unwrap_or(Tz::UTC);
    let format = format.unwrap_or_else(|| "%d/%m/%Y".to_owned());
    {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(&format).any(|item| matches!(item, Item::Error)) {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("date: {format:?} is not a valid format"),
            ));
        }
    }
    let Some(text) = value.as_str() else {
        return Ok(String::new());
    };
    let mut out = String::new();
    let result = if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        use std::fmt::Write;
        write!(
            out,
            "{}",
            at.with_timezone(&Utc).with_timezone(&tz).format(&format)
        )
    } else if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        use std::fmt::Write;
        write!(out, "{}", day.format(&format))
    } else {
        return Ok(String::new());
    };
    result.map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("date: bad format {format:?}"),
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope<'a>(
        vars: &'a serde_json::Map<String, serde_json::Value>,
        contact: &'a serde_json::Value,
    ) -> Scope<'a> {
        static BOT: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(
            || json!({"name": "sales", "timezone": "America/Argentina/Buenos_Aires"}),
        );
        Scope {
            contact,
            bot: &BOT,
            vars,
            now: "2026-11-21T15:30:00-03:00".into(),
            input: "hola",
            flow: "welcome",
        }
    }

    fn templates() -> Templates {
        Templates::new()
    }

    #[test]
    fn text_templates_render_variables() {
        let mut t = templates();
        let source = "Hola {{ contact.name }}, total {{ vars.total | money('ARS') }}";
        t.add_text(source).unwrap();
        let vars = json!({"total": 1234.5}).as_object().unwrap().clone();
        let contact = json!({"name": "Ana"});
        assert_eq!(
            t.render(source, &scope(&vars, &contact)).unwrap(),
            "Hola Ana, total ARS 1,234.50"
        );
        assert_eq!(t.variables(source, false), ["contact.name", "vars.total"]);
    }

    #[test]
    fn money_filter() {
        let mut t = templates();
        let cases = [
            ("{{ 1234.5 | money }}", "1,234.50"),
            ("{{ 1234.5 | money('EUR', locale='es') }}", "EUR 1.234,50"),
            ("{{ 1234567 | money('USD', decimals=0) }}", "USD 1,234,567"),
            ("{{ -5 | money('USD') }}", "-USD 5.00"),
            ("{{ '12.5' | money }}", "12.50"),
            ("{{ vars.missing | money('USD') }}", ""),
            ("{{ 999.999 | money }}", "1,000.00"),
        ];
        let vars = serde_json::Map::new();
        let contact = json!({});
        for (source, expected) in cases {
            t.add_text(source).unwrap();
            assert_eq!(
                t.render(source, &scope(&vars, &contact)).unwrap(),
                expected,
                "{source}"
            );
        }
        let bad = "{{ 1 | money('USD', locale='xx') }}";
        t.add_text(bad).unwrap();
        assert!(t.render(bad, &scope(&vars, &contact)).is_err());
    }

    #[test]
    fn date_filter_uses_the_bot_zone() {
        let mut t = templates();
        let vars = json!({"when": "2026-12-25", "at": "2026-11-21T02:00:00Z"})
            .as_object()
            .unwrap()
            .clone();
        let contact = json!({});
        let cases = [
            ("{{ now | date }}", "21/11/2026"),
            ("{{ now | date(format='%H:%M') }}", "15:30"),
            ("{{ vars.when | date(format='%d %b') }}", "25 Dec"),
            // 02:00 UTC is still the 20th in Buenos Aires (UTC-3).
            ("{{ vars.at | date }}", "20/11/2026"),
            ("{{ vars.nothing | date }}", ""),
        ];
        for (source, expected) in cases {
            t.add_text(source).unwrap();
            assert_eq!(
                t.render(source, &scope(&vars, &contact)).unwrap(),
                expected,
                "{source}"
            );
        }
    }

    #[test]
    fn expressions_evaluate_to_json() {
        let mut t = templates();
        let vars = json!({"total": 150, "qty": 3}).as_object().unwrap().clone();
        let contact = json!({"vip": true});
        for expr in [
            "vars.total > 100 and contact.vip",
            "vars.qty * 10",
            "vars.nope > 1",
            "'a' ~ vars.qty",
        ] {
            t.add_expression(expr).unwrap();
        }
        let s = scope(&vars, &contact);
        assert_eq!(
            t.eval("vars.total > 100 and contact.vip", &s).unwrap(),
            json!(true)
        );
        assert_eq!(t.eval("vars.qty * 10", &s).unwrap(), json!(30));
        assert_eq!(t.eval("'a' ~ vars.qty", &s).unwrap(), json!("a3"));
        assert!(!truthy(
            &t.eval("vars.nope > 1", &s).unwrap_or(json!(false))
        ));
    }

    #[test]
    fn syntax_errors_and_unknown_filters_are_caught_before_running() {
        let mut t = templates();
        assert!(t.add_text("Hola {{ contact.name ").is_err());
        assert!(t.add_expression("vars.total >").is_err());
        t.add_text("{{ vars.x | shout }}").unwrap();
        assert!(
            t.dry_run("{{ vars.x | shout }}", false)
                .unwrap_err()
                .contains("unknown filter")
        );
        t.add_text("{{ vars.x | upper }}").unwrap();
        t.dry_run("{{ vars.x | upper }}", false).unwrap();
    }

    #[test]
    fn nothing_is_escaped_and_none_prints_as_nothing() {
        let mut t = templates();
        let source = "Hola {{ contact.name }}, tienda.com/menu.html {{ vars.missing }}";
        t.add_text(source).unwrap();
        let vars = json!({"missing": null}).as_object().unwrap().clone();
        let contact = json!({"name": "O'Brien & Sons"});
        assert_eq!(
            t.render(source, &scope(&vars, &contact)).unwrap(),
            "Hola O'Brien & Sons, tienda.com/menu.html "
        );
        let url = "https://api.example.com/orders/{{ vars.order }}.json";
        t.add_text(url).unwrap();
        let vars = json!({"order": "A-123"}).as_object().unwrap().clone();
        assert_eq!(
            t.render(url, &scope(&vars, &contact)).unwrap(),
            "https://api.example.com/orders/A-123.json"
        );
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let mut t = templates();
        let source =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        t.add_text(source).unwrap();
        let vars = serde_json::Map::new();
        let contact = json!({});
        assert!(t.render(source, &scope(&vars, &contact)).is_err());
    }

    fn render_error(source: &str) -> String {
        let mut t = templates();
        t.add_text(source).unwrap();
        let vars = serde_json::Map::new();
        let contact = json!({});
        t.render(source, &scope(&vars, &contact)).expect_err(source)
    }

    #[test]
    fn huge_output_within_fuel_is_an_error_not_an_allocation() {
        for source in [
            "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "{{ 'y' * 70000 }}",
        ] {
            let err = render_error(source);
            assert!(
                err.contains("longer than 65536 bytes") || err.contains("printed more than"),
                "{source}: {err}"
            );
        }
        // What blocks and macros capture is counted too, though never output.
        for source in [
            "{% set s %}{% for i in range(100) %}{{ 'x' * 10000 }}{% endfor %}{% endset %}{{ s | length }}",
            "{% filter length %}{% for i in range(100) %}{{ 'x' * 10000 }}{% endfor %}{% endfilter %}",
            "{% macro m() %}{{ 'x' * 30000 }}{% endmacro %}{% for i in range(10) %}{{ m() | length }}{% endfor %}",
        ] {
            let err = render_error(source);
            assert!(
                err.contains("printed more than 262144 bytes"),
                "{source}: {err}"
            );
        }
        // Just under the bound is fine.
        let mut t = templates();
        let source = "{{ 'x' * 65536 }}";
        t.add_text(source).unwrap();
        let vars = serde_json::Map::new();
        let contact = json!({});
        assert_eq!(
            t.render(source, &scope(&vars, &contact)).unwrap().len(),
            65536
        );
        // Expressions too.
        let expr = "'x' * 70000";
        t.add_expression(expr).unwrap();
        assert!(
            t.eval(expr, &scope(&vars, &contact))
                .unwrap_err()
                .contains("longer than")
        );
    }

    #[test]
    fn amplifying_builtins_are_bounded_before_they_build() {
        let cases = [
            ("{{ range(100000) | length }}", "over the limit of 1000"),
            (
                "{{ range(1000) | join('x' * 1000) }}",
                "the result of `join`",
            ),
            ("{{ 'ab' | join('x' * 40000) }}", "the result of `join`"),
            (
                "{{ ('x' * 10000) | replace('x', 'yyyyyyyyyy') }}",
                "the result of `replace`",
            ),
            (
                "{{ ('x' * 1000) | replace('', 'y' * 100) }}",
                "the result of `replace`",
            ),
            ("{{ 'a\nb' | indent(100000000) }}", "width 100000000"),
            ("{{ '%99999999d' | format(1) }}", "width 99999999"),
            ("{{ '%.99999999f' | format(1) }}", "width 99999999"),
            ("{{ '%(n)-99999s' | format(n='a') }}", "width 99999"),
            ("{{ '%*d' | format(99999999, 1) }}", "`*` widths"),
            (
                "{{ [1] | batch(100000000, 0) | length }}",
                "over the limit of 10000 items",
            ),
            (
                "{{ (['x' * 1000] * 1000) | tojson }}",
                "the result of `tojson`",
            ),
            ("{{ [1] | tojson(indent=100000) }}", "width 100000"),
            (
                "{{ (['x' * 1000] * 1000) | string | length }}",
                "the result of `string`",
            ),
            (
                "{{ (['x' * 1000] * 1000) | pprint | length }}",
                "the result of `pprint`",
            ),
            (
                "{{ ('x' * 20000) | list | length }}",
                "over the limit of 10000",
            ),
        ];
        for (source, expected) in cases {
            let err = render_error(source);
            assert!(err.contains(expected), "{source}: {err}");
        }
    }

    #[test]
    fn bounded_builtins_behave_like_the_originals() {
        let mut t = templates();
        let vars = json!({"items": [{"name": "a"}, {"name": "b"}]})
            .as_object()
            .unwrap()
            .clone();
        let contact = json!({});
        let cases = [
            ("{{ range(3) | join(',') }}", "0,1,2"),
            ("{{ range(1, 7, 2) | join }}", "135"),
            ("{{ range(5, 0, -2) | join(d='.') }}", "5.3.1"),
            ("{{ vars.items | join(', ', attribute='name') }}", "a, b"),
            ("{{ 'abc' | join('-') }}", "a-b-c"),
            ("{{ 'Hola mundo' | replace('mundo', 'Ana') }}", "Hola Ana"),
            ("{{ 'a\nb' | indent(2) }}", "a\n  b"),
            ("{{ '%05d-%s' | format(42, 'x') }}", "00042-x"),
            (
                "{{ 'Pedido 123456: %s, 100%%' | format('ok') }}",
                "Pedido 123456: ok, 100%",
            ),
            ("{{ [1, 2, 3] | batch(2, 0) | tojson }}", "[[1,2],[3,0]]"),
            ("{{ {'a': '<b>'} | tojson }}", "{\"a\":\"<b>\"}"),
            ("{{ [1] | tojson(indent=2) }}", "[\n  1\n]"),
            ("{{ 'ab' | list | join('|') }}", "a|b"),
            ("{{ [1, 'x'] | string }}", "[1, 'x']"),
        ];
        for (source, expected) in cases {
            t.add_text(source).unwrap();
            assert_eq!(
                t.render(source, &scope(&vars, &contact)).unwrap(),
                expected,
                "{source}"
            );
        }
    }

    #[test]
    fn debug_is_not_available() {
        let mut t = templates();
        let source = "{{ debug() }}";
        t.add_text(source).unwrap();
        assert!(
            t.dry_run(source, false)
                .unwrap_err()
                .contains("unknown function")
        );
        assert!(!KNOWN_ROOTS.contains(&"debug"));
    }

    #[test]
    fn templates_cannot_load_other_templates() {
        let mut t = templates();
        t.add_text("Hola").unwrap();
        for source in [
            "{% include 'Hola' %}",
            "{% include 'missing' ignore missing %}",
            "{% include vars.name %}",
            "{% import 'Hola' as m %}",
            "{% from 'Hola' import x %}",
            "{% extends 'Hola' %}",
            "{% if false %}{% include 'Hola' %}{% endif %}",
        ] {
            let err = t.add_text(source).unwrap_err();
            assert!(err.contains("cannot use"), "{source}: {err}");
            assert!(t.add_expression(source).is_err());
        }
        // Macros and blocks in place stay usable.
        let source = "{% macro hi(n) %}Hola {{ n }}{% endmacro %}{{ hi('Ana') }}";
        t.add_text(source).unwrap();
        let vars = serde_json::Map::new();
        let contact = json!({});
        assert_eq!(
            t.render(source, &scope(&vars, &contact)).unwrap(),
            "Hola Ana"
        );
    }
}
