//! One bad document per class of error: each is rejected with a message that names the
//! flow, step and field (the expected text is the first line of each file).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use dash_core::flow::{Bundle, Capabilities};

#[test]
fn each_class_of_error_is_reported_precisely() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_flows");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let errors = match Bundle::from_text(&text, 1, Capabilities::CURRENT) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(errors) => errors,
        };
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            shown.iter().any(|e| e.contains(expected)),
            "{}: expected {expected:?} in {shown:#?}",
            path.display()
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let doc = r#"
default_flow = "nope"
[[flows]]
id = "main"
steps = [
  { id = "a", kind = "message", text = "{{ vars.x }}", next = "zzz" },
  { id = "b", kind = "goto", flow = "ghost" },
]
"#;
    let errors = Bundle::from_text(doc, 1, Capabilities::CURRENT).unwrap_err();
    assert!(errors.len() >= 4, "{errors:#?}");
}

#[test]
fn capabilities_unlock_declared_actions() {
    let doc = r#"
[[flows]]
id = "main"
triggers = [{ keywords = ["order"] }]
steps = [
  { id = "order", kind = "action", create_order = { items = "{{ input }}", total = 3 } },
  { id = "done", kind = "end", text = "ok" },
]
"#;
    assert!(Bundle::from_text(doc, 1, Capabilities::CURRENT).is_err());
    let caps = Capabilities {
        create_order: true,
        ..Capabilities::CURRENT
    };
    let bundle = Bundle::from_text(doc, 1, caps).unwrap();
    // The engine hands the rendered action to dashd and goes on.
    struct One(Bundle);
    impl dash_core::flow::Versions for One {
        fn active(&self) -> Option<&Bundle> {
            Some(&self.0)
        }
        fn get(&self, v: u32) -> Option<&Bundle> {
            (v == self.0.version).then_some(&self.0)
        }
    }
    let contact = serde_json::json!({"phone": "+1"});
    let bot = serde_json::json!({"name": "b", "timezone": "UTC"});
    let ctx = dash_core::flow::Context {
        now: chrono::Utc::now(),
        timezone: chrono_tz::UTC,
        bot: &bot,
        contact: &contact,
    };
    let event = dash_core::flow::Event::Message {
        text: "order 2 cafés".into(),
        reply_id: None,
    };
    let outcome = dash_core::flow::step(&One(bundle), Default::default(), &event, &ctx);
    let action = outcome
        .effects
        .iter()
        .find_map(|e| match e {
            dash_core::flow::Effect::Action { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        action,
        serde_json::json!({"items": "order 2 cafés", "total": 3})
    );
    assert!(
        outcome.state.active.is_none(),
        "the flow went on to its end"
    );
    // A payload that is not a table is refused.
    let scalar = doc.replace(
        "create_order = { items = \"{{ input }}\", total = 3 }",
        "create_order = \"x\"",
    );
    assert!(Bundle::from_text(&scalar, 1, caps).is_err());
}

#[test]
fn a_loop_through_a_question_is_fine() {
    let doc = r#"
[[flows]]
id = "main"
triggers = [{ keywords = ["go"] }]
steps = [
  { id = "ask", kind = "question", text = "again?", var = "again", validate = { type = "choices", choices = ["yes", "no"] } },
  { id = "check", kind = "condition", branches = [{ when = "vars.again == 'yes'", step = "ask" }] },
  { id = "bye", kind = "end" },
]
"#;
    Bundle::from_text(doc, 1, Capabilities::CURRENT).unwrap();
}
