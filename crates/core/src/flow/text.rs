//! Text as the engine compares it, and the checks applied to customers' answers.
//! Matching folds case and accents ("Menú" = "menu") and treats any run of
//! non-alphanumerics as one space.

use chrono::{Duration, NaiveDate};
use unicode_normalization::char::{decompose_canonical, is_combining_mark};

use super::document::Validation;
use crate::validate;

/// Lower-cases, removes accents and collapses punctuation and spaces into single spaces,
/// with no leading or trailing space: `"¡Hola, MAÑANA!"` → `"hola manana"`.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_ascii() {
            // Fast path: ASCII has no accents to strip and lower-cases in place.
            if c.is_ascii_alphanumeric() {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.push(c.to_ascii_lowercase());
            } else {
                pending_space = true;
            }
            continue;
        }
        decompose_canonical(c, |part| {
            if part.is_alphanumeric() {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.extend(part.to_lowercase());
            } else if !is_combining_mark(part) {
                pending_space = true;
            }
        });
    }
    out
}

/// Checks an answer against a question's rule and returns the value to store, or `None`
/// when the answer is not acceptable. `today` is the current date in the bot's zone.
pub fn check_answer(
    rule: &Validation,
    answer: &str,
    today: NaiveDate,
    regex: Option<&regex::Regex>,
) -> Option<serde_json::Value> {
    let answer = answer.trim();
    if answer.is_empty() {
        return None;
    }
    use serde_json::Value;
    match rule {
        Validation::Text { min, max } => {
            let len = answer.chars().count();
            (min.is_none_or(|min| len >= min) && max.is_none_or(|max| len <= max))
                .then(|| Value::String(answer.to_owned()))
        }
        Validation::Number { min, max, integer } => {
            let n = parse_number(answer)?;
            let in_range = min.is_none_or(|min| n >= min) && max.is_none_or(|max| n <= max);
            if !in_range || (*integer && n.fract() != 0.0) {
                return None;
            }
            if n.fract() == 0.0 && n.abs() < 9e15 {
                // Integral values are stored as integers; the cast is exact in this range.
                Some(Value::from(n as i64))
            } else {
                serde_json::Number::from_f64(n).map(Value::Number)
            }
        }
        Validation::Email => email(answer).map(Value::String),
        Validation::Phone { country_code } => {
            phone(answer, country_code.as_deref()).map(Value::String)
        }
        Validation::Date { formats, relative } => date(answer, formats, *relative, today)
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string())),
        Validation::Regex { .. } => regex
            .filter(|re| re.is_match(answer))
            .map(|_| Value::String(answer.to_owned())),
        Validation::Choices { choices } => {
            let folded = fold(answer);
            choices
                .iter()
                .find(|choice| fold(choice) == folded)
                .map(|choice| Value::String(choice.clone()))
        }
    }
}

/// `1234.5`, `1.234,5`, `1,234.5`, `-3`, `2,5`: the last of `.`/`,` is the decimal mark
/// when both appear; a lone `,` is a decimal comma.
fn parse_number(text: &str) -> Option<f64> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let normalised = match (compact.rfind('.'), compact.rfind(',')) {
        (Some(dot), Some(comma)) if comma > dot => compact.replace('.', "").replace(',', "."),
        (Some(_), Some(_)) => compact.replace(',', ""),
        (None, Some(_)) => compact.replace(',', "."),
        _ => compact,
    };
    let n: f64 = normalised.parse().ok()?;
    n.is_finite().then_some(n)
}

fn email(text: &str) -> Option<String> {
    let (local, domain) = text.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.contains(char::is_whitespace)
        && !local.contains('@');
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    (local_ok && domain_ok).then(|| format!("{local}@{}", domain.to_lowercase()))
}

fn phone(text: &str, country_code: Option<&str>) -> Option<String> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let full = if text.trim_start().starts_with('+') {
        format!("+{digits}")
    } else if let Some(international) = digits.strip_prefix("00") {
        format!("+{international}")
    } else {
        let code = country_code?.trim_start_matches('+');
        // Written with its country code but no `+` ("5491123456789"): national numbers
        // are shorter than the code plus ten digits.
        if digits.starts_with(code) && digits.len() >= code.len() + 10 {
            format!("+{digits}")
        } else {
            format!("+{code}{}", digits.trim_start_matches('0'))
        }
    };
    validate::phone("answer", &full).ok()
}

fn date(text: &str, formats: &[String], relative: bool, today: NaiveDate) -> Option<NaiveDate> {
    if relative {
        let offset = match fold(text).as_str() {
            "today" | "hoy" => Some(0),
            "tomorrow" | "manana" => Some(1),
            "yesterday" | "ayer" => Some(-1),
            "pasado manana" | "day after tomorrow" => Some(2),
            _ => None,
        };
        if let Some(days) = offset {
            return today.checked_add_signed(Duration::days(days));
        }
    }
    formats
        .iter()
        .find_map(|format| NaiveDate::parse_from_str(text.trim(), format).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
    }

    fn check(rule: &Validation, answer: &str) -> Option<serde_json::Value> {
        check_answer(rule, answer, today(), None)
    }

    #[test]
    fn folding_ignores_case_accents_and_punctuation() {
        assert_eq!(fold("¡Hola, MAÑANA!"), "hola manana");
        assert_eq!(fold("  Menú   "), "menu");
        assert_eq!(fold("pedido #123"), "pedido 123");
        assert_eq!(fold("Ça va?"), "ca va");
        assert_eq!(fold("!!!"), "");
    }

    #[test]
    fn text_bounds() {
        let rule = Validation::Text {
            min: Some(2),
            max: Some(5),
        };
        assert_eq!(check(&rule, " Ana "), Some(json!("Ana")));
        assert_eq!(check(&rule, "A"), None);
        assert_eq!(check(&rule, "Anastasia"), None);
        assert_eq!(check(&rule, "   "), None);
        assert_eq!(check(&rule, "Ñañá"), Some(json!("Ñañá")));
    }

    #[test]
    fn numbers_in_several_notations() {
        let any = Validation::Number {
            min: None,
            max: None,
            integer: false,
        };
        assert_eq!(check(&any, "1234.5"), Some(json!(1234.5)));
        assert_eq!(check(&any, "1.234,5"), Some(json!(1234.5)));
        assert_eq!(check(&any, "1,234.5"), Some(json!(1234.5)));
        assert_eq!(check(&any, "2,5"), Some(json!(2.5)));
        assert_eq!(check(&any, "42"), Some(json!(42)));
        assert_eq!(check(&any, "-3"), Some(json!(-3)));
        assert_eq!(check(&any, "tres"), None);
        assert_eq!(check(&any, "NaN"), None);
        assert_eq!(check(&any, "inf"), None);
        let ranged = Validation::Number {
            min: Some(1.0),
            max: Some(10.0),
            integer: true,
        };
        assert_eq!(check(&ranged, "10"), Some(json!(10)));
        assert_eq!(check(&ranged, "11"), None);
        assert_eq!(check(&ranged, "0"), None);
        assert_eq!(check(&ranged, "2.5"), None);
    }

    #[test]
    fn emails() {
        assert_eq!(
            check(&Validation::Email, "ana@Example.COM"),
            Some(json!("ana@example.com"))
        );
        for bad in [
            "ana",
            "ana@",
            "@x.com",
            "ana@x",
            "a na@x.com",
            "ana@x..com",
            "ana@-x.com",
            "a@b@c.com",
        ] {
            assert_eq!(check(&Validation::Email, bad), None, "{bad}");
        }
    }

    #[test]
    fn phones_are_normalised() {
        let plain = Validation::Phone { country_code: None };
        assert_eq!(
            check(&plain, "+54 9 11 2345-6789"),
            Some(json!("+5491123456789"))
        );
        assert_eq!(check(&plain, "11 2345 6789"), None);
        let ar = Validation::Phone {
            country_code: Some("54".into()),
        };
        assert_eq!(check(&ar, "011 2345 6789"), Some(json!("+541123456789")));
        assert_eq!(check(&ar, "+1 415 555 2671"), Some(json!("+14155552671")));
        assert_eq!(check(&ar, "12"), None);
        assert_eq!(check(&ar, "5491123456789"), Some(json!("+5491123456789")));
        assert_eq!(
            check(&ar, "0054 9 11 2345 6789"),
            Some(json!("+5491123456789"))
        );
        assert_eq!(check(&ar, "11 2345 6789"), Some(json!("+541123456789")));
    }

    #[test]
    fn dates_by_format_and_relative_words() {
        let rule = Validation::Date {
            formats: vec!["%d/%m/%Y".into()],
            relative: true,
        };
        assert_eq!(check(&rule, "25/12/2026"), Some(json!("2026-12-25")));
        assert_eq!(check(&rule, "hoy"), Some(json!("2026-11-21")));
        assert_eq!(check(&rule, "Mañana"), Some(json!("2026-11-22")));
        assert_eq!(check(&rule, "tomorrow"), Some(json!("2026-11-22")));
        assert_eq!(check(&rule, "ayer"), Some(json!("2026-11-20")));
        assert_eq!(check(&rule, "pasado mañana"), Some(json!("2026-11-23")));
        assert_eq!(check(&rule, "31/02/2026"), None);
        assert_eq!(check(&rule, "2026-12-25"), None);
        let absolute = Validation::Date {
            formats: vec!["%Y-%m-%d".into()],
            relative: false,
        };
        assert_eq!(check(&absolute, "hoy"), None);
    }

    #[test]
    fn regex_and_choices() {
        let re = regex::Regex::new(r"^[A-Z]{3}-\d{3}$").unwrap();
        let rule = Validation::Regex {
            pattern: re.as_str().into(),
        };
        assert_eq!(
            check_answer(&rule, "ABC-123", today(), Some(&re)),
            Some(json!("ABC-123"))
        );
        assert_eq!(check_answer(&rule, "abc-123", today(), Some(&re)), None);
        let choices = Validation::Choices {
            choices: vec!["Sí".into(), "No".into()],
        };
        assert_eq!(check(&choices, "si"), Some(json!("Sí")));
        assert_eq!(check(&choices, "NO!"), Some(json!("No")));
        assert_eq!(check(&choices, "tal vez"), None);
    }
}
