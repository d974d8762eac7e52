//! Property tests: random valid documents driven by random events never panic, never run
//! away, and always leave a conversation waiting on something real or ended; random text
//! never crashes the parser or the validator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use dash_core::flow::document::{
    Branch, Command, Document, Flow, Http, Idle, MatchMode, MenuOption, Span, Step, Trigger,
    Validation,
};
use dash_core::flow::engine::{EndReason, HttpOutcome, Waiting};
use dash_core::flow::{
    Bundle, Capabilities, Context, ConversationState, Effect, Event, Versions, step,
};
use proptest::prelude::*;
use serde_json::json;

const WORDS: &[&str] = &[
    "hola",
    "menu",
    "1",
    "2",
    "3",
    "si",
    "no",
    "cancelar",
    "ana@example.com",
    "42",
    "mañana",
    "zzz",
    "+5491123456789",
    "ayuda",
];

struct One(Bundle);

impl Versions for One {
    fn active(&self) -> Option<&Bundle> {
        Some(&self.0)
    }
    fn get(&self, version: u32) -> Option<&Bundle> {
        (version == self.0.version).then_some(&self.0)
    }
}

/// A step description: (kind selector, a few numbers used as references and choices).
type RawStep = (u8, usize, usize, u8);

fn build_step(flow: usize, index: usize, count: usize, flows: usize, raw: RawStep) -> Step {
    let (kind, a, b, v) = raw;
    let id = format!("s{index}");
    let last = index + 1 == count;
    // Forward references only (plus menus, which wait), so documents are loop-free.
    let forward = |n: usize| {
        if last {
            None
        } else {
            Some(format!("s{}", index + 1 + n % (count - index - 1)))
        }
    };
    let validation = match v % 6 {
        0 => Validation::Text {
            min: Some(1),
            max: Some(10),
        },
        1 => Validation::Number {
            min: Some(1.0),
            max: Some(5.0),
            integer: true,
        },
        2 => Validation::Email,
        3 => Validation::Phone {
            country_code: Some("54".into()),
        },
        4 => Validation::Date {
            formats: vec!["%d/%m/%Y".into()],
            relative: true,
        },
        _ => Validation::Choices {
            choices: vec!["si".into(), "no".into()],
        },
    };
    match kind % 9 {
        0 => Step::Message {
            id,
            text: vec![format!("m{flow}.{index} {{{{ input }}}}")],
            media: None,
            delay: None,
            next: None,
        },
        1 => Step::Question {
            id,
            text: format!("q{flow}.{index}?"),
            var: format!("v{index}"),
            validate: validation,
            retry: None,
            max_retries: u32::from(v % 3),
            on_fail: forward(b),
            next: None,
        },
        2 => Step::Menu {
            id,
            text: "pick".into(),
            options: vec![
                MenuOption {
                    id: None,
                    label: "uno".into(),
                    synonyms: vec![],
                    step: Some(format!("s{}", if last { a % count } else { index + 1 })),
                    flow: None,
                },
                MenuOption {
                    id: None,
                    label: "otro".into(),
                    synonyms: vec![],
                    step: Some(format!("s{}", a % count)),
                    flow: None,
                },
                MenuOption {
                    id: None,
                    label: "dos".into(),
                    synonyms: vec!["si".into()],
                    step: None,
                    flow: Some(format!("f{}", b % flows)),
                },
            ],
            var: Some("choice".into()),
            retry: None,
            max_retries: 1,
            on_fail: None,
        },
        3 if !last => Step::Condition {
            id,
            branches: vec![Branch {
                when: format!("input == '{}'", WORDS[a % WORDS.len()]),
                step: forward(b),
                flow: None,
            }],
            next: None,
        },
        4 => Step::Action {
            id,
            set: Some(BTreeMap::from([(
                "n".to_string(),
                json!({"expr": "(vars.n or 0) + 1"}),
            )])),
            http: None,
            create_order: None,
            notify: None,
            llm: None,
            next: None,
        },
        5 => Step::Action {
            id,
            set: None,
            http: Some(Http {
                method: "POST".into(),
                url: "https://example.com/{{ input }}".into(),
                headers: BTreeMap::new(),
                body: Some("{\"n\": 1}".into()),
                timeout: None,
                save: BTreeMap::from([("r".to_string(), "data.id".to_string())]),
                on_error: forward(b),
            }),
            create_order: None,
            notify: None,
            llm: None,
            next: None,
        },
        6 => Step::Handoff {
            id,
            text: Some("human".into()),
            resume: forward(0),
        },
        7 if last && flow + 1 < flows => Step::Goto {
            id,
            step: None,
            flow: Some(format!("f{}", flow + 1 + a % (flows - flow - 1))),
        },
        _ if last => Step::End {
            id,
            text: Some("bye".into()),
        },
        _ => Step::Message {
            id,
            text: vec!["filler".into()],
            media: None,
            delay: None,
            next: None,
        },
    }
}

fn document() -> impl Strategy<Value = Document> {
    prop::collection::vec(
        (
            prop::collection::vec(
                (any::<u8>(), any::<usize>(), any::<usize>(), any::<u8>()),
                1..7,
            ),
            0..WORDS.len(),
            any::<bool>(),
        ),
        1..5,
    )
    .prop_map(|flows| {
        let count = flows.len();
        let flows = flows
            .into_iter()
            .enumerate()
            .map(|(f, (steps, word, idle))| {
                let n = steps.len();
                Flow {
                    id: format!("f{f}"),
                    triggers: vec![Trigger {
                        keywords: vec![WORDS[word].into()],
                        mode: MatchMode::Word,
                        regex: None,
                    }],
                    idle: idle.then(|| Idle {
                        after: Span(std::time::Duration::from_secs(600)),
                        reminder: Some("still there?".into()),
                        end_after: None,
                        end_message: Some("closing".into()),
                    }),
                    steps: steps
                        .into_iter()
                        .enumerate()
                        .map(|(i, raw)| build_step(f, i, n, count, raw))
                        .collect(),
                }
            })
            .collect();
        Document {
            default_flow: Some("f0".into()),
            expiry: Span(std::time::Duration::from_secs(3600)),
            out_of_hours: None,
            hours: None,
            commands: vec![Command {
                keywords: vec!["cancelar".into()],
                mode: MatchMode::Exact,
                flow: None,
                end: true,
                message: Some("ok".into()),
            }],
            flows,
        }
    })
}

#[derive(Debug, Clone)]
enum Action {
    Say(usize),
    Timer(usize),
    Http(bool),
    Resume,
    Wait(i64),
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0..WORDS.len()).prop_map(Action::Say),
            1 => any::<usize>().prop_map(Action::Timer),
            1 => any::<bool>().prop_map(Action::Http),
            1 => Just(Action::Resume),
            1 => (0i64..2000).prop_map(Action::Wait),
        ],
        1..40,
    )
}

fn check_invariants(bundle: &Bundle, state: &ConversationState, effects: &[Effect]) {
    for effect in effects {
        if let Effect::ConversationEnded { reason } = effect {
            assert_ne!(*reason, EndReason::Error, "{effects:#?}");
        }
        if let Effect::Warning { message } = effect {
            assert!(!message.contains("budget"), "{message}");
            // Validation bounds every straight-line path, so no run meets a limit.
            assert!(!message.contains("_per_event"), "{message}");
        }
    }
    if let Some(active) = &state.active {
        let flow = bundle.flow(&active.flow).expect("active flow exists");
        let pos = bundle.step(flow, &active.step).expect("active step exists");
        let step = bundle.step_at(pos).unwrap();
        let consistent = matches!(
            (&active.waiting, step),
            (Waiting::Answer, Step::Question { .. })
                | (Waiting::Choice, Step::Menu { .. })
                | (Waiting::Handoff, Step::Handoff { .. })
                | (Waiting::Http { .. }, Step::Action { http: Some(_), .. })
        );
        assert!(
            consistent,
            "waiting {:?} on a {} step",
            active.waiting,
            step.kind()
        );
    }
    let mut ids: Vec<u64> = state.timers.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), state.timers.len(), "duplicate timer ids");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_documents_and_events_never_run_away(doc in document(), script in actions()) {
        let Ok(bundle) = Bundle::compile(doc, 1, Capabilities::CURRENT) else {
            // Generated documents are meant to be valid; an invalid one is not this test's subject.
            return Ok(());
        };
        let versions = One(bundle);
        let mut state = ConversationState::default();
        let mut now = Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap();
        let contact = json!({"phone": "+5491123456789", "name": "Ana"});
        let bot = json!({"name": "bot", "timezone": "UTC"});
        for action in script {
            let event = match action {
                Action::Say(word) => Event::Message { text: WORDS[word].into(), reply_id: None },
                Action::Timer(pick) => match state.timers.get(pick % state.timers.len().max(1)) {
                    Some(timer) => {
                        now = now.max(timer.at);
                        Event::Timer { id: timer.id }
                    }
                    None => Event::Timer { id: pick as u64 },
                },
                Action::Http(ok) => {
                    let request_id = match state.active.as_ref().map(|a| &a.waiting) {
                        Some(Waiting::Http { request_id }) => *request_id,
                        _ => 999,
                    };
                    let outcome = if ok {
                        HttpOutcome::Response { status: 200, body: json!({"data": {"id": 7}}) }
                    } else {
                        HttpOutcome::Failed { error: "timeout".into() }
                    };
                    Event::Http { request_id, outcome }
                }
                Action::Resume => Event::Resume,
                Action::Wait(minutes) => {
                    now += Duration::minutes(minutes);
                    continue;
                }
            };
            let ctx = Context { now, timezone: chrono_tz::UTC, bot: &bot, contact: &contact };
            let outcome = step(&versions, state, &event, &ctx);
            check_invariants(&versions.0, &outcome.state, &outcome.effects);
            state = ConversationState::from_json(&serde_json::to_string(&outcome.state).unwrap()).unwrap();
        }
    }

    #[test]
    fn arbitrary_text_never_crashes_the_parser(text in "\\PC{0,400}") {
        let _ = Bundle::from_text(&text, 1, Capabilities::CURRENT);
    }

    #[test]
    fn toml_shaped_noise_never_crashes_the_validator(
        kind in "(message|question|menu|condition|action|handoff|goto|end|x)",
        field in "(text|next|var|options|branches|set|http|step|flow|validate)",
        value in "(\"[a-z{}% .|]{0,20}\"|[0-9]{1,3}|\\[\\]|\\{\\})",
    ) {
        let doc = format!("[[flows]]\nid = \"f\"\n[[flows.steps]]\nid = \"s\"\nkind = \"{kind}\"\n{field} = {value}\n");
        let _ = Bundle::from_text(&doc, 1, Capabilities::CURRENT);
    }
}

#[test]
fn most_generated_documents_are_valid() {
    // Guards the property test above against silently testing nothing.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = document();
    let mut valid = 0;
    for _ in 0..200 {
        let doc = strategy.new_tree(&mut runner).unwrap().current();
        match Bundle::compile(doc, 1, Capabilities::CURRENT) {
            Ok(_) => valid += 1,
            Err(errors) if std::env::var_os("SHOW_INVALID").is_some() => eprintln!("{errors:?}"),
            Err(_) => {}
        }
    }
    assert!(
        valid > 120,
        "only {valid} of 200 generated documents were valid"
    );
}
