//! Trigger matching, compiled once per flow version. Keywords of every flow go into one
//! Aho-Corasick automaton run over the folded message (padded with spaces so that word
//! boundaries are part of the patterns); regexes go into one `RegexSet`. Both run in time
//! linear in the message, whatever the number of flows; no user or tenant text is ever
//! evaluated as code.

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{RegexSet, RegexSetBuilder};

use super::document::MatchMode;
use super::text::fold;

/// Compiled regexes may not exceed this size (guards memory against hostile patterns).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One keyword or regex and what it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Keyword { text: String, mode: MatchMode },
    Regex(String),
}

/// Finds, for a message, the lowest-numbered target (flow or command index) whose
/// pattern matches.
#[derive(Debug, Clone)]
pub struct Matcher {
    keywords: Option<AhoCorasick>,
    /// For each automaton pattern: its target and mode.
    keyword_targets: Vec<(usize, MatchMode)>,
    regexes: Option<RegexSet>,
    regex_targets: Vec<usize>,
}

/// A regex that failed to compile: (its position among the targets' regexes, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRegex {
    pub target: usize,
    pub pattern: String,
    pub message: String,
}

impl Matcher {
    /// Compiles `(target, pattern)` pairs. Keywords that fold to nothing are skipped
    /// (validation reports them).
    pub fn compile(patterns: &[(usize, Pattern)]) -> Result<Matcher, BadRegex> {
        let mut keyword_texts = Vec::new();
        let mut keyword_targets = Vec::new();
        let mut regex_texts = Vec::new();
        let mut regex_targets = Vec::new();
        for (target, pattern) in patterns {
            match pattern {
                Pattern::Keyword { text, mode } => {
                    let folded = fold(text);
                    if folded.is_empty() {
                        continue;
                    }
                    keyword_texts.push(match mode {
                        MatchMode::Exact | MatchMode::Word => format!(" {folded} "),
                        MatchMode::Prefix => format!(" {folded}"),
                        MatchMode::Contains => folded,
                    });
                    keyword_targets.push((*target, *mode));
                }
                Pattern::Regex(text) => {
                    compile_regex(text).map_err(|message| BadRegex {
                        target: *target,
                        pattern: text.clone(),
                        message,
                    })?;
                    regex_texts.push(text.clone());
                    regex_targets.push(*target);
                }
            }
        }
        let keywords = if keyword_texts.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&keyword_texts)
                    .map_err(|err| BadRegex {
                        target: 0,
                        pattern: String::new(),
                        message: format!("keywords: {err}"),
                    })?,
            )
        };
        let regexes = if regex_texts.is_empty() {
            None
        } else {
            Some(
                // Each pattern was checked against the limit alone; the set may hold them all.
                RegexSetBuilder::new(&regex_texts)
                    .size_limit(REGEX_SIZE_LIMIT.saturating_mul(regex_texts.len()))
                    .dfa_size_limit(REGEX_SIZE_LIMIT.saturating_mul(regex_texts.len()))
                    .build()
                    .map_err(|err| BadRegex {
                        target: regex_targets.first().copied().unwrap_or(0),
                        pattern: String::new(),
                        message: err.to_string(),
                    })?,
            )
        };
        Ok(Matcher {
            keywords,
            keyword_targets,
            regexes,
            regex_targets,
        })
    }

    /// The lowest target matching `message`, if any.
    pub fn find(&self, message: &str) -> Option<usize> {
        let mut best: Option<usize> = None;
        if let Some(automaton) = &self.keywords {
            let padded = format!(" {} ", fold(message));
            for found in automaton.find_overlapping_iter(&padded) {
                let (target, mode) = self.keyword_targets[found.pattern().as_usize()];
                if best.is_some_and(|b| b <= target) {
                    continue;
                }
                let ok = match mode {
                    MatchMode::Exact => found.start() == 0 && found.end() == padded.len(),
                    MatchMode::Prefix => found.start() == 0,
                    MatchMode::Word | MatchMode::Contains => true,
                };
                if ok {
                    best = Some(target);
                    if target == 0 {
                        return best;
                    }
                }
            }
        }
        if let Some(set) = &self.regexes {
            for index in set.matches(message).iter() {
                let target = self.regex_targets[index];
                if best.is_none_or(|b| target < b) {
                    best = Some(target);
                }
            }
        }
        best
    }
}

/// Compiles a tenant-written regex with the engine's limits (linear-time dialect).
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(target: usize, text: &str, mode: MatchMode) -> (usize, Pattern) {
        (
            target,
            Pattern::Keyword {
                text: text.into(),
                mode,
            },
        )
    }

    #[test]
    fn keyword_modes() {
        let m = Matcher::compile(&[
            kw(0, "hola", MatchMode::Word),
            kw(1, "menú", MatchMode::Exact),
            kw(2, "pedido", MatchMode::Prefix),
            kw(3, "precio", MatchMode::Contains),
        ])
        .unwrap();
        assert_eq!(m.find("HOLA!"), Some(0));
        assert_eq!(m.find("bueno, hola che"), Some(0));
        assert_eq!(m.find("holanda"), None);
        assert_eq!(m.find("Menu"), Some(1));
        assert_eq!(m.find("el menu"), None);
        assert_eq!(m.find("Pedido 123"), Some(2));
        assert_eq!(m.find("pedidos"), Some(2));
        assert_eq!(m.find("mi pedido"), None);
        assert_eq!(m.find("¿Preciosos?"), Some(3));
        assert_eq!(m.find("nada"), None);
        assert_eq!(m.find(""), None);
    }

    #[test]
    fn multi_word_keywords_and_priority() {
        let m = Matcher::compile(&[
            kw(0, "hablar con alguien", MatchMode::Word),
            kw(1, "hablar", MatchMode::Word),
        ])
        .unwrap();
        assert_eq!(m.find("Quiero HABLAR con   alguien."), Some(0));
        assert_eq!(m.find("quiero hablar"), Some(1));
    }

    #[test]
    fn regexes_join_keywords_by_target_order() {
        let m = Matcher::compile(&[
            (1, Pattern::Regex(r"(?i)^pedido\s+\d+$".into())),
            kw(0, "ayuda", MatchMode::Word),
            kw(2, "pedido", MatchMode::Word),
        ])
        .unwrap();
        assert_eq!(m.find("Pedido 42"), Some(1));
        assert_eq!(m.find("ayuda con pedido 42"), Some(0));
        assert_eq!(m.find("un pedido"), Some(2));
    }

    #[test]
    fn bad_and_backtracking_regexes_are_refused() {
        let err = Matcher::compile(&[(4, Pattern::Regex("(unclosed".into()))]).unwrap_err();
        assert_eq!(err.target, 4);
        // Look-around and back-references need backtracking: not in this dialect.
        assert!(compile_regex(r"(a)\1").is_err());
        assert!(compile_regex(r"foo(?=bar)").is_err());
        // A pattern that would blow up in size is refused, not compiled.
        assert!(compile_regex(r"\w{1000}\w{1000}\w{1000}").is_err());
    }

    #[test]
    fn catastrophic_input_is_linear() {
        let m = Matcher::compile(&[
            (0, Pattern::Regex(r"^(a+)+$".into())),
            kw(1, "a", MatchMode::Contains),
        ])
        .unwrap();
        let long = "a".repeat(100_000) + "b";
        assert_eq!(m.find(&long), Some(1));
    }
}
