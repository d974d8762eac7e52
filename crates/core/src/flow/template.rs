//! Templates and expressions, on minijinja. Every template of a flow version is compiled
//! once, keyed by its own source text; conditions and `{ expr = ... }` values are
//! compiled as small templates too. Rendering is bounded by fuel, so a template cannot
//! loop forever, and a template that fails at run time yields a warning, never a crash.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use minijinja::value::{Kwargs, Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

/// Instructions a single render may execute.
const FUEL: u64 = 50_000;

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
    "debug",
];

/// The compiled templates of one flow version.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
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
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(32);
        env.add_filter("money", money);
        env.add_filter("date", date);
        Self { env }
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
        self.env
            .add_template_owned(name, source)
            .map_err(|err| describe(&err))
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
        let template = self
            .env
            .get_template(source)
            .map_err(|err| describe(&err))?;
        template
            .render(Value::from(Serde(scope)))
            .map_err(|err| describe(&err))
    }

    /// Evaluates an expression to JSON.
    pub fn eval(&self, expr: &str, scope: &Scope<'_>) -> Result<serde_json::Value, String> {
        let template = self
            .env
            .get_template(&expr_key(expr))
            .map_err(|err| describe(&err))?;
        let json = template
            .render(Value::from(Serde(scope)))
            .map_err(|err| describe(&err))?;
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
        let template = self.env.get_template(&key).map_err(|err| describe(&err))?;
        match template.render(Value::from(Serde(&scope))) {
            Err(err)
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
}
