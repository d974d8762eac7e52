//! Validation rules for the values users type: slugs, phone numbers, time zones and
//! display names. Each check returns the normalised value or a [`ValidationError`] that
//! names the field and states the rule, so both the API and the CLI can show it as is.

use std::fmt;

/// A value broke a rule. `field` is the name the user knows (`slug`, `phone`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field as named in the API and in `dashctl` flags.
    pub field: String,
    /// What is wrong, including the rule the value must follow.
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field` with a message stating the rule.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The rule for slugs, quoted in error messages.
pub const SLUG_RULE: &str =
    "2 to 40 characters from a-z, 0-9 and '-', not starting or ending with '-'";

/// Checks a tenant slug or bot name: `[a-z0-9-]{2,40}`, no leading or trailing hyphen.
///
/// Slugs appear in URLs, file names and `TENANT/BOT` references, so the rule is strict
/// and case-sensitive: `Acme` is rejected rather than silently lower-cased.
pub fn slug(field: &str, value: &str) -> Result<(), ValidationError> {
    let len_ok = (2..=40).contains(&value.len());
    let chars_ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let edges_ok = !value.starts_with('-') && !value.ends_with('-');
    if len_ok && chars_ok && edges_ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{} is not a valid {field}: use {SLUG_RULE}", Quoted(value)),
        ))
    }
}

/// Normalises a phone number to E.164 (`+` then 8 to 15 digits, the first not 0).
///
/// Spaces, dots, hyphens and parentheses are dropped first, so `+54 9 11 2345-6789`
/// becomes `+5491123456789`. A number without the leading `+` is rejected: guessing a
/// country code would send messages to the wrong person.
pub fn phone(field: &str, value: &str) -> Result<String, ValidationError> {
    let compact: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(compact)
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{} is not an E.164 phone number: use '+', the country code and the number, 8 to 15 digits in all (e.g. +5491123456789)",
                Quoted(value)
            ),
        ))
    }
}

/// Checks a contact identifier as operators and integrations give it: an E.164 phone
/// number, a Cloud API business-scoped user id (`US.13491208655302741918`, parent ids
/// `US.ENT.118...`), a WhatsApp Web LID (`12345678901234@lid`) or a username
/// (`@name`). Returns it normalised (phones compacted).
pub fn contact_id(field: &str, value: &str) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.starts_with('+') {
        return phone(field, value);
    }
    let bsuid = value.split_once('.').is_some_and(|(country, rest)| {
        country.len() == 2
            && country.bytes().all(|b| b.is_ascii_uppercase())
            && !rest.is_empty()
            && rest.len() <= 132
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    });
    let lid = value.strip_suffix("@lid").is_some_and(|digits| {
        (1..=24).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    });
    let username = value.strip_prefix('@').is_some_and(|name| {
        (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
    });
    if bsuid || lid || username {
        Ok(value.to_owned())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{} is not a contact: give an E.164 phone number (+5491123456789), a WhatsApp user id (US.13491208655302741918), a LID (12345678901234@lid) or a username (@name)",
                Quoted(value)
            ),
        ))
    }
}

/// Checks an IANA time zone name (`America/Argentina/Buenos_Aires`, `UTC`) and returns
/// its canonical spelling.
pub fn timezone(field: &str, value: &str) -> Result<chrono_tz::Tz, ValidationError> {
    value.parse::<chrono_tz::Tz>().map_err(|_| {
        let suggestion = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(value.trim()))
            .map(|tz| format!(" (did you mean {}?)", tz.name()))
            .unwrap_or_default();
        ValidationError::new(
            field,
            format!(
                "{} is not an IANA time zone{suggestion}: use a name such as America/Argentina/Buenos_Aires or UTC",
                Quoted(value)
            ),
        )
    })
}

/// Checks a display name: 1 to 200 characters after trimming, no control characters.
pub fn display_name(field: &str, value: &str) -> Result<String, ValidationError> {
    let trimmed = value.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > 200 || trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks a free-form token (a message id, an interactive reply id): at most `max`
/// characters, no control characters.
pub fn token(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A user value as error messages quote it: in quotes, escaped, cut to 60 characters.
pub fn quoted(value: &str) -> String {
    Quoted(value).to_string()
}

/// `text` cut to at most `max` characters (on a character boundary, `…` marking the
/// cut), with control characters other than newline and tab escaped. For messages that
/// carry someone else's text, such as a parser's complaint about the input.
pub fn bounded(text: &str, max: usize) -> String {
    let mut shown = String::with_capacity(text.len().min(max * 4));
    for (count, c) in text.chars().enumerate() {
        if count == max {
            shown.push('…');
            break;
        }
        if c.is_control() && c != '\n' && c != '\t' {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Displays a user value in quotes, escaped and cut short, so an error message never
/// carries terminal control sequences or a megabyte of input.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 60;
        let mut shown: String = self.0.chars().take(MAX).collect();
        if self.0.chars().count() > MAX {
            shown.push('…');
        }
        write!(f, "{shown:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_rule() {
        for good in ["acme", "a1", "shop-2", "x".repeat(40).as_str()] {
            assert!(slug("slug", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "Acme",
            "-acme",
            "acme-",
            "ac me",
            "acmé",
            "a_b",
            &"x".repeat(41),
        ] {
            let err = slug("slug", bad).unwrap_err();
            assert_eq!(err.field, "slug");
            assert!(err.message.contains("a-z, 0-9"), "{}", err.message);
        }
    }

    #[test]
    fn phones_are_normalised_to_e164() {
        assert_eq!(phone("phone", "+5491123456789").unwrap(), "+5491123456789");
        assert_eq!(
            phone("phone", "+54 9 11 2345-6789").unwrap(),
            "+5491123456789"
        );
        assert_eq!(phone("phone", "+1 (415) 555.2671").unwrap(), "+14155552671");
        for bad in [
            "5491123456789",
            "+0491123456789",
            "+1234567",
            "+1234567890123456",
            "+54911abc56789",
            "",
            "+",
        ] {
            let err = phone("phone", bad).unwrap_err();
            assert!(err.message.contains("E.164"), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn timezones_are_iana_names() {
        assert!(timezone("timezone", "America/Argentina/Buenos_Aires").is_ok());
        assert!(timezone("timezone", "UTC").is_ok());
        let err = timezone("timezone", "Mars/Olympus").unwrap_err();
        assert_eq!(err.field, "timezone");
        assert!(err.message.contains("IANA"));
        let err = timezone("timezone", "america/new_york").unwrap_err();
        assert!(
            err.message.contains("did you mean America/New_York?"),
            "{}",
            err.message
        );
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(display_name("name", "  Acme SA ").unwrap(), "Acme SA");
        assert!(display_name("name", "   ").is_err());
        assert!(display_name("name", "a\u{1b}[31m").is_err());
        assert!(display_name("name", &"x".repeat(201)).is_err());
    }

    #[test]
    fn bounded_text_is_cut_on_a_character_and_escaped() {
        assert_eq!(bounded("hola", 10), "hola");
        let cut = bounded(&"ñ".repeat(1_000_000), 64);
        assert_eq!(cut.chars().count(), 65);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("a\u{1b}[31m\nb", 20), "a\\u{1b}[31m\nb");
        assert_eq!(bounded("a\u{9b}b", 20), "a\\u{9b}b");
    }

    #[test]
    fn tokens_are_bounded_without_control_characters() {
        assert!(token("reply_id", "opt-1", 10).is_ok());
        assert_eq!(
            token("reply_id", &"x".repeat(11), 10).unwrap_err().field,
            "reply_id"
        );
        assert!(token("reply_id", "a\u{7f}", 10).is_err());
        assert!(token("reply_id", "a\u{85}", 10).is_err());
    }

    #[test]
    fn quoted_values_are_escaped_and_cut() {
        let long = "é".repeat(100);
        let shown = Quoted(&long).to_string();
        assert!(shown.chars().count() < 70);
        assert_eq!(Quoted("a\u{1b}").to_string(), "\"a\\u{1b}\"");
    }
}
