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
    // create_order is run by this release; notify is not, and is refused until a
    // daemon declares it.
    let notify = doc.replace("create_order = ", "notify = ");
    assert!(Bundle::from_text(&notify, 1, Capabilities::CURRENT).is_err());
    let caps = Capabilities {
        notify: true,
        ..Capabilities::CURRENT
    };
    assert!(Bundle::from_text(&notify, 1, caps).is_ok());
    let without = Capabilities {
        create_order: false,
        ..Capabilities::CURRENT
    };
    assert!(Bundle::from_text(doc, 1, without).is_err());
    let bundle = Bundle::from_text(doc, 1, Capabilities::CURRENT).unwrap();
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

#[test]
fn debug_is_refused_in_any_branch() {
    let doc = r#"
[[flows]]
id = "main"
steps = [{ id = "hello", kind = "message", text = "{% if false %}{{ debug() }}{% endif %}Hola" }]
"#;
    let errors = Bundle::from_text(doc, 1, Capabilities::CURRENT).unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .starts_with("flow \"main\", step \"hello\", field text[0]: unknown variable `debug`"),
        "{errors:#?}"
    );
}

#[test]
fn limits_are_configurable_at_validation() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/invalid_flows/too_many_messages.toml"),
    )
    .unwrap();
    let limits = dash_core::flow::Limits {
        max_messages: 21,
        ..Default::default()
    };
    Bundle::from_text_within(&text, 1, Capabilities::CURRENT, &limits).unwrap();
    let tighter = dash_core::flow::Limits {
        max_steps: 20,
        ..limits
    };
    let errors = Bundle::from_text_within(&text, 1, Capabilities::CURRENT, &tighter).unwrap_err();
    assert!(
        errors[0].message.contains("21 steps can run"),
        "{errors:#?}"
    );
    // A command that sends a message and starts a flow counts both.
    let doc = r#"
[[commands]]
keywords = ["menu"]
message = "Back to the menu"
flow = "main"
[[flows]]
id = "main"
steps = [
  { id = "a", kind = "message", text = "one" },
  { id = "b", kind = "end", text = "two" },
]
"#;
    let two = dash_core::flow::Limits {
        max_messages: 2,
        ..Default::default()
    };
    let errors = Bundle::from_text_within(doc, 1, Capabilities::CURRENT, &two).unwrap_err();
    assert_eq!(
        errors[0].field.as_deref(),
        Some("commands[0]"),
        "{errors:#?}"
    );
}

#[test]
fn compiled_size_estimate_tracks_the_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flows");
    for name in ["shop.toml", "support.toml", "out_of_hours.toml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let bundle = Bundle::from_text(&text, 1, Capabilities::CURRENT).unwrap();
        let size = bundle.approx_size_bytes();
        eprintln!(
            "{name}: {} bytes of source, about {size} bytes compiled",
            text.len()
        );
        // Compiled templates and regexes cost tens of times their source (measured: 48 KB
        // for out_of_hours.toml, 164 KB for support.toml, 244 KB for shop.toml).
        assert!(
            size > 30 * text.len() && size < 100 * text.len() + 64 * 1024,
            "{name}: {size}"
        );
    }
    // Twice the flows, about twice the cost.
    let one = "[[flows]]\nid = \"a\"\nsteps = [{ id = \"q\", kind = \"question\", text = \"Hola {{ contact.name }}\", var = \"x\" }]\n";
    let two = format!(
        "{one}{}",
        one.replace("\"a\"", "\"b\"").replace("Hola", "Chau")
    );
    let small = Bundle::from_text(one, 1, Capabilities::CURRENT)
        .unwrap()
        .approx_size_bytes();
    let large = Bundle::from_text(&two, 1, Capabilities::CURRENT)
        .unwrap()
        .approx_size_bytes();
    assert!(large > small, "{small} {large}");
}

#[test]
fn documents_hold_a_bounded_number_of_templates() {
    let mut doc = String::from(
        "[[flows]]\nid = \"f\"\n[[flows.steps]]\nid = \"q\"\nkind = \"question\"\nvar = \"x\"\ntext = \"?\"\n[[flows.steps]]\nid = \"m\"\nkind = \"message\"\ntext = [\n",
    );
    for i in 0..2_100 {
        doc.push_str(&format!("  \"{i}\",\n"));
    }
    doc.push_str("]\n");
    let errors = Bundle::from_text(&doc, 1, Capabilities::CURRENT).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .to_string()
            .contains("field text[1999]: a document may hold at most 2000 different templates"),
        "{errors:#?}"
    );
}
