//! The flow engine through its public `step` function: every step kind, validator,
//! trigger kind, template filter and business-hours rule, as conversations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use dash_core::flow::engine::{EndReason, HttpOutcome, StartReason, TimerKind, Waiting};
use dash_core::flow::{
    Bundle, Capabilities, Context, ConversationState, Effect, Event, Limits, Versions, step_within,
};
use serde_json::{Value, json};

struct Store {
    bundles: Vec<Bundle>,
    active: Option<u32>,
}

impl Versions for Store {
    fn active(&self) -> Option<&Bundle> {
        self.active.and_then(|v| self.get(v))
    }
    fn get(&self, version: u32) -> Option<&Bundle> {
        self.bundles.iter().find(|b| b.version == version)
    }
}

struct Chat {
    store: Store,
    state: ConversationState,
    now: DateTime<Utc>,
    tz: Tz,
    contact: Value,
    bot: Value,
    last: Vec<Effect>,
    limits: Limits,
}

fn bundle(text: &str, version: u32) -> Bundle {
    Bundle::from_text(text, version, Capabilities::CURRENT)
        .unwrap_or_else(|errors| panic!("{errors:#?}"))
}

impl Chat {
    fn new(doc: &str) -> Chat {
        Chat::at(doc, Utc.with_ymd_and_hms(2026, 11, 23, 15, 0, 0).unwrap())
    }

    fn at(doc: &str, now: DateTime<Utc>) -> Chat {
        Chat {
            store: Store {
                bundles: vec![bundle(doc, 1)],
                active: Some(1),
            },
            state: ConversationState::default(),
            now,
            tz: "America/Argentina/Buenos_Aires".parse().unwrap(),
            contact: json!({"phone": "+5491123456789", "name": "Ana", "vip": true}),
            bot: json!({"name": "Tienda", "timezone": "America/Argentina/Buenos_Aires"}),
            last: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// A chat on a document validated against `validated_with`, run within `limits`.
    fn within(doc: &str, validated_with: &Limits, limits: Limits) -> Chat {
        let mut chat =
            Chat::new("[[flows]]\nid = \"x\"\nsteps = [{ id = \"e\", kind = \"end\" }]\n");
        chat.store.bundles = vec![
            Bundle::from_text_within(doc, 1, Capabilities::CURRENT, validated_with)
                .unwrap_or_else(|errors| panic!("{errors:#?}")),
        ];
        chat.limits = limits;
        chat
    }

    fn event(&mut self, event: Event) -> Vec<String> {
        let ctx = Context {
            now: self.now,
            timezone: self.tz,
            bot: &self.bot,
            contact: &self.contact,
        };
        let outcome = step_within(
            &self.store,
            std::mem::take(&mut self.state),
            &event,
            &ctx,
            &self.limits,
        );
        self.state = outcome.state;
        // Round-trip the state through JSON as dashd stores it.
        let json = serde_json::to_string(&self.state).unwrap();
        self.state = ConversationState::from_json(&json).unwrap();
        self.last = outcome.effects;
        self.sent()
    }

    fn say(&mut self, text: &str) -> Vec<String> {
        self.event(Event::Message {
            text: text.into(),
            reply_id: None,
        })
    }

    fn sent(&self) -> Vec<String> {
        self.last
            .iter()
            .filter_map(|e| match e {
                Effect::Send(out) => Some(out.text.clone()),
                _ => None,
            })
            .collect()
    }

    fn ended(&self) -> Option<EndReason> {
        self.last.iter().find_map(|e| match e {
            Effect::ConversationEnded { reason } => Some(*reason),
            _ => None,
        })
    }

    fn started(&self) -> Option<(String, StartReason)> {
        self.last.iter().find_map(|e| match e {
            Effect::ConversationStarted { flow, reason, .. } => Some((flow.clone(), *reason)),
            _ => None,
        })
    }

    fn timer(&self, kind: TimerKind) -> Option<(u64, DateTime<Utc>)> {
        self.state
            .timers
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| (t.id, t.at))
    }

    fn fire(&mut self, kind: TimerKind) -> Vec<String> {
        let (id, at) = self
            .timer(kind)
            .unwrap_or_else(|| panic!("no {kind:?} timer in {:?}", self.state.timers));
        self.now = at;
        self.event(Event::Timer { id })
    }

    fn var(&self, name: &str) -> Value {
        self.state.vars.get(name).cloned().unwrap_or(Value::Null)
    }

    fn step_id(&self) -> String {
        self.state
            .active
            .as_ref()
            .map(|a| a.step.clone())
            .unwrap_or_default()
    }
}

const SHOP: &str = include_str!("../../../examples/flows/shop.toml");

#[test]
fn the_shop_example_takes_a_whole_order() {
    let mut chat = Chat::new(SHOP);
    let replies = chat.say("Hola!");
    assert_eq!(
        chat.started(),
        Some(("bienvenida".into(), StartReason::Trigger))
    );
    assert_eq!(replies[0], "¡Hola Ana! Soy el asistente de Tienda.");
    assert!(
        replies[1].contains("1. Ver el catálogo\n2. Hablar con una persona"),
        "{replies:?}"
    );
    let menu = chat.say("1");
    assert!(menu[0].contains("Caja de alfajores"), "{menu:?}");
    chat.say("alfajores");
    assert_eq!(chat.var("precio"), json!(4500));
    assert_eq!(chat.step_id(), "cantidad");
    assert_eq!(chat.say("cien"), ["Decime un número entre 1 y 20."]);
    chat.say("3");
    assert_eq!(chat.var("total"), json!(13500));
    chat.say("Ana Pérez");
    chat.say("011 2345-6789");
    assert_eq!(chat.var("telefono"), json!("+541123456789"));
    assert_eq!(
        chat.say("ana@"),
        ["Ese email no parece válido. ¿Lo revisás?"]
    );
    let confirm = chat.say("ana@example.com");
    assert_eq!(
        confirm,
        [
            "Confirmo: 3 × Caja de alfajores ($4.500) = $ 13.500, a nombre de Ana Pérez. ¿Está bien? (sí/no)"
        ]
    );
    let done = chat.say("Si");
    assert_eq!(chat.ended(), Some(EndReason::Completed));
    assert!(done[0].starts_with("¡Gracias, Ana Pérez! Tu pedido de 3 × Caja de alfajores ($4.500) por $ 13.500 quedó registrado el 23/11/2026."), "{done:?}");
    assert!(chat.state.active.is_none());
    assert!(
        chat.state.timers.is_empty(),
        "timers left: {:?}",
        chat.state.timers
    );
    assert!(chat.state.vars.is_empty());
}

#[test]
fn retries_exhausted_go_to_on_fail_or_end() {
    let mut chat = Chat::new(SHOP);
    chat.say("catalogo");
    chat.say("2");
    assert_eq!(chat.var("precio"), json!(7200));
    chat.say("0");
    chat.say("21");
    let out = chat.say("muchos");
    assert_eq!(chat.ended(), Some(EndReason::Completed));
    assert_eq!(
        out,
        ["No registré ningún pedido. Escribí *menu* para empezar de nuevo."]
    );

    let doc = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["go"] }]
[[flows.steps]]
id = "q"
kind = "question"
text = "Your age?"
var = "age"
validate = { type = "number", min = 0, max = 130 }
max_retries = 1
"#;
    let mut chat = Chat::new(doc);
    chat.say("go");
    assert_eq!(chat.say("old"), ["Your age?"]); // the question again when no retry text
    assert!(chat.say("very old").is_empty());
    assert_eq!(chat.ended(), Some(EndReason::RetriesExhausted));
}

#[test]
fn global_commands_interrupt_a_question() {
    let mut chat = Chat::new(SHOP);
    chat.say("catalogo");
    chat.say("1");
    assert_eq!(chat.step_id(), "cantidad");
    let out = chat.say("CANCELAR");
    assert_eq!(chat.ended(), Some(EndReason::Command));
    assert_eq!(
        out,
        ["Listo, cancelé tu pedido. Escribí *menu* cuando quieras volver."]
    );
    assert!(chat.state.active.is_none());
    // "menu" restarts at the welcome flow even mid-question.
    chat.say("catalogo");
    chat.say("cafe");
    let out = chat.say("Menú");
    assert_eq!(
        chat.started(),
        Some(("bienvenida".into(), StartReason::Command))
    );
    assert!(out[1].contains("1. Ver el catálogo"), "{out:?}");
    assert!(chat.state.vars.is_empty());
    // A command word inside a sentence is just an answer here (commands match whole messages).
    let doc = SHOP;
    let mut chat = Chat::new(doc);
    chat.say("catalogo");
    chat.say("1");
    chat.say("quiero cancelar");
    assert!(chat.ended().is_none());
}

#[test]
fn menus_accept_numbers_labels_synonyms_and_reply_ids() {
    for answer in ["2", "hablar con una persona", "HUMANO", "Asesor!"] {
        let mut chat = Chat::new(SHOP);
        chat.say("hola");
        let out = chat.say(answer);
        assert_eq!(
            out,
            ["Te paso con una persona del equipo. Te responde en breve."],
            "{answer}"
        );
        assert_eq!(
            chat.state.active.as_ref().unwrap().waiting,
            Waiting::Handoff
        );
    }
    let mut chat = Chat::new(SHOP);
    chat.say("catalogo");
    chat.event(Event::Message {
        text: "Café molido".into(),
        reply_id: Some("cafe".into()),
    });
    assert_eq!(chat.var("producto"), json!("Café molido 500 g ($7.200)"));
    // Menu effects carry the choices for interactive buttons and lists.
    let mut chat = Chat::new(SHOP);
    chat.say("catalogo");
    let choices = chat
        .last
        .iter()
        .find_map(|e| match e {
            Effect::Send(out) if !out.choices.is_empty() => Some(out.choices.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(choices[0].id, "alfajores");
}

#[test]
fn handoff_silences_the_bot_until_resumed() {
    let support = include_str!("../../../examples/flows/support.toml");
    let mut chat = Chat::new(support);
    chat.say("I need help");
    chat.say("2");
    assert!(
        chat.last
            .iter()
            .any(|e| matches!(e, Effect::Handoff { flow, .. } if flow == "agent"))
    );
    assert!(chat.say("hello? anyone?").is_empty());
    assert!(
        chat.say("help").is_empty(),
        "triggers are ignored during a handoff"
    );
    let out = chat.event(Event::Resume);
    assert_eq!(
        out,
        ["Thanks for your patience. Anything else, just write *help*."]
    );
    assert_eq!(chat.ended(), Some(EndReason::Completed));
    // Resume outside a handoff does nothing.
    assert!(chat.event(Event::Resume).is_empty());
}

#[test]
fn http_actions_map_results_and_handle_errors() {
    let support = include_str!("../../../examples/flows/support.toml");
    let mut chat = Chat::new(support);
    chat.say("support");
    chat.say("ticket");
    assert_eq!(
        chat.say("tk-12"),
        ["Ticket numbers look like TK-1234. Try again?"]
    );
    chat.say("tk-1234");
    let request = chat
        .last
        .iter()
        .find_map(|e| match e {
            Effect::Http(request) => Some(request.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        request.url,
        "https://support.example.com/api/tickets/TK-1234"
    );
    assert_eq!(request.method, "GET");
    assert_eq!(request.timeout_ms, 5000);
    assert_eq!(
        request.headers,
        [("Accept".to_string(), "application/json".to_string())]
    );
    // A message while the request runs does not disturb it.
    assert!(chat.say("??").is_empty());
    // A stale result is ignored.
    chat.event(Event::Http {
        request_id: request.request_id + 100,
        outcome: HttpOutcome::Failed { error: "x".into() },
    });
    assert!(chat.state.active.is_some());
    let out = chat.event(Event::Http {
        request_id: request.request_id,
        outcome: HttpOutcome::Response {
            status: 200,
            body: json!({"status": "open", "owner": {"name": "Bea"}}),
        },
    });
    assert_eq!(out, ["Ticket TK-1234 is open, handled by Bea."]);

    let mut chat = Chat::new(support);
    chat.say("support");
    chat.say("ticket");
    chat.say("TK-999");
    let id = chat
        .last
        .iter()
        .find_map(|e| match e {
            Effect::Http(r) => Some(r.request_id),
            _ => None,
        })
        .unwrap();
    let out = chat.event(Event::Http {
        request_id: id,
        outcome: HttpOutcome::Response {
            status: 503,
            body: Value::Null,
        },
    });
    assert_eq!(out, ["Connecting you with a person. Please hold on."]);
    assert!(
        chat.last
            .iter()
            .any(|e| matches!(e, Effect::Warning { message } if message.contains("503")))
    );
}

#[test]
fn idle_reminder_then_end() {
    let mut chat = Chat::new(SHOP);
    chat.say("hola");
    let (_, at) = chat.timer(TimerKind::IdleReminder).unwrap();
    assert_eq!(at, chat.now + Duration::minutes(10));
    assert_eq!(
        chat.fire(TimerKind::IdleReminder),
        ["¿Seguís ahí? Respondé con un número del menú."]
    );
    let (_, end_at) = chat.timer(TimerKind::IdleEnd).unwrap();
    assert_eq!(end_at, chat.now + Duration::minutes(20));
    assert_eq!(
        chat.fire(TimerKind::IdleEnd),
        ["Cerré la conversación por inactividad. ¡Escribinos cuando quieras!"]
    );
    assert_eq!(chat.ended(), Some(EndReason::Idle));
    assert!(chat.state.timers.is_empty());
}

#[test]
fn an_answer_cancels_idle_timers_and_stale_timers_are_ignored() {
    let mut chat = Chat::new(SHOP);
    chat.say("hola");
    let (old, _) = chat.timer(TimerKind::IdleReminder).unwrap();
    chat.say("1");
    assert!(
        chat.last
            .iter()
            .any(|e| matches!(e, Effect::CancelTimer { id } if *id == old))
    );
    assert!(chat.event(Event::Timer { id: old }).is_empty());
    assert!(chat.state.active.is_some());
}

#[test]
fn conversations_expire_by_timer_or_on_the_next_message() {
    let mut chat = Chat::new(SHOP);
    chat.say("catalogo");
    let (_, at) = chat.timer(TimerKind::Expiry).unwrap();
    assert_eq!(at, chat.now + Duration::hours(24));
    chat.fire(TimerKind::Expiry);
    assert_eq!(chat.ended(), Some(EndReason::Expired));

    // dashd was down when the timer was due: the next message still sees it expired.
    let mut chat = Chat::new(SHOP);
    chat.say("catalogo");
    chat.now += Duration::hours(25);
    let out = chat.say("hola");
    assert!(chat.last.iter().any(|e| matches!(
        e,
        Effect::ConversationEnded {
            reason: EndReason::Expired
        }
    )));
    assert_eq!(
        chat.started(),
        Some(("bienvenida".into(), StartReason::Trigger))
    );
    assert!(out[0].starts_with("¡Hola Ana!"));
}

#[test]
fn unmatched_first_messages_use_the_default_flow_or_stay_silent() {
    let mut chat = Chat::new(SHOP);
    chat.say("qué tal?");
    assert_eq!(
        chat.started(),
        Some(("bienvenida".into(), StartReason::Default))
    );
    let silent = SHOP.replace("default_flow = \"bienvenida\"", "");
    let mut chat = Chat::new(&silent);
    assert!(chat.say("qué tal?").is_empty());
    assert!(chat.state.active.is_none());
}

#[test]
fn triggers_match_by_kind() {
    let doc = r#"
[[flows]]
id = "exact"
triggers = [{ keywords = ["precio"], match = "exact" }]
steps = [{ id = "a", kind = "end", text = "exact" }]
[[flows]]
id = "prefix"
triggers = [{ keywords = ["pedido"], match = "prefix" }]
steps = [{ id = "a", kind = "end", text = "prefix" }]
[[flows]]
id = "regex"
triggers = [{ regex = "(?i)^factura\\s+[a-z]\\d+$" }]
steps = [{ id = "a", kind = "end", text = "regex" }]
[[flows]]
id = "contains"
triggers = [{ keywords = ["envi"], match = "contains" }]
steps = [{ id = "a", kind = "end", text = "contains" }]
[[flows]]
id = "word"
triggers = [{ keywords = ["ayuda"] }]
steps = [{ id = "a", kind = "end", text = "word" }]
"#;
    for (message, expected) in [
        ("Precio", Some("exact")),
        ("precio del cafe", None),
        ("Pedido 42", Some("prefix")),
        ("FACTURA A123", Some("regex")),
        ("cuanto sale el envío?", Some("contains")),
        ("necesito AYUDA!", Some("word")),
        ("ayudante", None),
    ] {
        let mut chat = Chat::new(doc);
        let out = chat.say(message);
        assert_eq!(out.first().map(String::as_str), expected, "{message}");
    }
}

#[test]
fn conditions_actions_and_gotos() {
    let doc = r#"
[[flows]]
id = "calc"
triggers = [{ keywords = ["calc"] }]
[[flows.steps]]
id = "qty"
kind = "question"
text = "How many?"
var = "qty"
validate = { type = "number", integer = true }
[[flows.steps]]
id = "compute"
kind = "action"
set = { total = { expr = "vars.qty * 60" }, label = "{{ vars.qty }} units", rush = false }
[[flows.steps]]
id = "branch"
kind = "condition"
branches = [
  { when = "vars.total > 100 and contact.vip", step = "vip" },
  { when = "vars.total > 100", flow = "big" },
]
next = "small"
[[flows.steps]]
id = "vip"
kind = "end"
text = "VIP {{ vars.total | money('USD') }} for {{ vars.label }}"
[[flows.steps]]
id = "small"
kind = "goto"
step = "done"
[[flows.steps]]
id = "done"
kind = "end"
text = "Small {{ vars.total }}"
[[flows]]
id = "big"
steps = [{ id = "b", kind = "end", text = "Big {{ vars.total }} (rush={{ vars.rush }})" }]
"#;
    let mut chat = Chat::new(doc);
    chat.say("calc");
    assert_eq!(chat.say("2"), ["VIP USD 120.00 for 2 units"]);
    let mut chat = Chat::new(doc);
    chat.contact = json!({"phone": "+1", "vip": false});
    chat.say("calc");
    assert_eq!(chat.say("2"), ["Big 120 (rush=False)"]); // Jinja spells booleans this way
    let mut chat = Chat::new(doc);
    chat.say("calc");
    assert_eq!(chat.say("1"), ["Small 60"]);
}

#[test]
fn message_steps_send_several_texts_media_and_delay() {
    let doc = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["pic"] }]
steps = [{ id = "m", kind = "message", text = ["one", "two {{ input }}"], media = { url = "https://cdn.example.com/{{ contact.phone }}.jpg", type = "image", caption = "hi" }, delay = "2s" }]
"#;
    let mut chat = Chat::new(doc);
    assert_eq!(chat.say("pic"), ["one", "two pic"]);
    let Effect::Send(first) = chat
        .last
        .iter()
        .find(|e| matches!(e, Effect::Send(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(first.delay_ms, 2000);
    assert_eq!(
        first.media.as_ref().unwrap().url,
        "https://cdn.example.com/+5491123456789.jpg"
    );
    assert_eq!(chat.ended(), Some(EndReason::Completed));
}

#[test]
fn business_hours_pick_the_out_of_hours_flow() {
    let doc = include_str!("../../../examples/flows/out_of_hours.toml");
    let tz: Tz = "America/Argentina/Buenos_Aires".parse().unwrap();
    let local = |y, m, d, h, min| {
        tz.with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    // Monday 2026-11-23 10:00 local: open.
    let mut chat = Chat::at(doc, local(2026, 11, 23, 10, 0));
    assert_eq!(
        chat.say("hola"),
        ["¡Hola! Estamos atendiendo. En un momento te responde una persona."]
    );
    // Monday 13:30 (lunch), Sunday, Christmas and 31/12 afternoon: closed.
    for at in [
        local(2026, 11, 23, 13, 30),
        local(2026, 11, 22, 11, 0),
        local(2026, 12, 25, 10, 0),
        local(2026, 12, 31, 15, 0),
    ] {
        let mut chat = Chat::at(doc, at);
        let out = chat.say("hola");
        assert_eq!(
            chat.started(),
            Some(("cerrado".into(), StartReason::OutOfHours)),
            "{at}"
        );
        assert!(out[0].contains("Ahora estamos cerrados"), "{at}: {out:?}");
        let out = chat.say("Necesito factura A");
        assert_eq!(
            out,
            [
                "¡Gracias! Guardamos tu consulta: «Necesito factura A». Te escribimos en cuanto abramos."
            ]
        );
    }
    // A conversation that started while open is not interrupted at closing time.
    let mut chat = Chat::at(doc, local(2026, 11, 23, 17, 59));
    chat.say("hola");
    chat.now = local(2026, 11, 23, 18, 30);
    assert!(chat.say("sigo acá").is_empty());
    assert!(chat.state.active.is_some());

    let with_message = doc.replace(
        "out_of_hours = { flow = \"cerrado\" }",
        "out_of_hours = { message = \"Cerrado. Volvé el {{ now | date(format='%A') }}.\" }",
    );
    let mut chat = Chat::at(&with_message, local(2026, 11, 22, 11, 0));
    assert_eq!(chat.say("hola"), ["Cerrado. Volvé el Sunday."]);
    assert!(chat.state.active.is_none());
}

#[test]
fn a_conversation_finishes_on_the_version_it_started_with() {
    let v1 = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["go"] }]
steps = [
  { id = "q", kind = "question", text = "v1 question", var = "x" },
  { id = "e", kind = "end", text = "v1 end {{ vars.x }}" },
]
"#;
    let v2 = v1.replace("v1", "v2");
    let mut chat = Chat::new(v1);
    assert_eq!(chat.say("go"), ["v1 question"]);
    chat.store.bundles.push(bundle(&v2, 2));
    chat.store.active = Some(2);
    assert_eq!(chat.say("a"), ["v1 end a"]);
    assert_eq!(chat.say("go"), ["v2 question"]);
    assert_eq!(chat.state.active.as_ref().unwrap().version, 2);

    // If its version was deleted, the conversation ends and the message starts afresh.
    chat.store.bundles.retain(|b| b.version == 1);
    chat.store.bundles.push(bundle(&v1.replace("v1", "v3"), 3));
    chat.store.active = Some(3);
    let out = chat.say("go");
    assert!(chat.last.iter().any(|e| matches!(
        e,
        Effect::ConversationEnded {
            reason: EndReason::VersionRemoved
        }
    )));
    assert_eq!(out, ["v3 question"]);
}

#[test]
fn question_validators_through_the_engine() {
    let doc = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["go"] }]
steps = [
  { id = "d", kind = "question", text = "date?", var = "d", validate = { type = "date", relative = true } },
  { id = "c", kind = "question", text = "color?", var = "c", validate = { type = "choices", choices = ["Rojo", "Azul"] } },
  { id = "t", kind = "question", text = "text?", var = "t", validate = { type = "text", max = 3 } },
  { id = "e", kind = "end", text = "{{ vars.d | date(format='%d %b') }} {{ vars.c }} {{ vars.t }}" },
]
"#;
    let mut chat = Chat::new(doc);
    chat.say("go");
    assert_eq!(chat.say("31/02/2026"), ["date?"]);
    chat.say("mañana");
    assert_eq!(chat.var("d"), json!("2026-11-24"));
    assert_eq!(chat.say("verde"), ["color?"]);
    chat.say("azul");
    assert_eq!(chat.say("abcd"), ["text?"]);
    assert_eq!(chat.say("abc"), ["24 Nov Azul abc"]);
}

#[test]
fn state_written_by_this_release_is_read_back_and_newer_schemas_refused() {
    let stored = r#"{"schema":1,"active":{"version":3,"flow":"f","step":"q","waiting":{"for":"answer"},"retries":1,"started_at":"2026-11-21T10:00:00Z"},"vars":{"x":1},"timers":[{"id":4,"kind":"idle_reminder","at":"2026-11-21T10:10:00Z"}],"next_id":5,"last_activity":"2026-11-21T10:00:00Z"}"#;
    let state = ConversationState::from_json(stored).unwrap();
    assert_eq!(state.active.as_ref().unwrap().version, 3);
    assert_eq!(state.timers[0].kind, TimerKind::IdleReminder);
    let newer = stored.replace("\"schema\":1", "\"schema\":99");
    assert!(
        ConversationState::from_json(&newer)
            .unwrap_err()
            .contains("newer")
    );
}

#[test]
fn business_hours_hold_across_daylight_saving_through_step() {
    // Madrid moves from UTC+1 to UTC+2 on 2026-03-29 (a Sunday); Monday opens at 09:00
    // local on both sides: 08:00 UTC before the change, 07:00 UTC after.
    let doc = r#"
default_flow = "open"
out_of_hours = { message = "closed" }
[hours]
monday = ["09:00-18:00"]
[[flows]]
id = "open"
steps = [{ id = "a", kind = "end", text = "open" }]
"#;
    let madrid: Tz = "Europe/Madrid".parse().unwrap();
    let reply = |at: DateTime<Utc>| {
        let mut chat = Chat::at(doc, at);
        chat.tz = madrid;
        chat.say("hola")
    };
    let utc = |d, h, m| Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap();
    assert_eq!(reply(utc(23, 7, 59)), ["closed"]); // 08:59 CET, before the change
    assert_eq!(reply(utc(23, 8, 0)), ["open"]); // 09:00 CET
    assert_eq!(reply(utc(30, 6, 59)), ["closed"]); // 08:59 CEST, after the change
    assert_eq!(reply(utc(30, 7, 0)), ["open"]); // 09:00 CEST
    assert_eq!(reply(utc(30, 16, 0)), ["closed"]); // 18:00 CEST
}

#[test]
fn commands_respect_business_hours() {
    let doc = r#"
out_of_hours = { message = "Cerrado" }
[hours]
monday = ["09:00-10:00"]
[[commands]]
keywords = ["menu"]
flow = "main"
[[flows]]
id = "main"
steps = [{ id = "a", kind = "end", text = "menú" }]
"#;
    let tz: Tz = "America/Argentina/Buenos_Aires".parse().unwrap();
    let noon = tz
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let mut chat = Chat::at(doc, noon);
    assert_eq!(chat.say("menu"), ["Cerrado"]);
    let open = tz
        .with_ymd_and_hms(2026, 11, 23, 9, 30, 0)
        .unwrap()
        .with_timezone(&Utc);
    let mut chat = Chat::at(doc, open);
    assert_eq!(chat.say("menu"), ["menú"]);
}

#[test]
fn long_flows_valid_under_their_limits_never_hit_them() {
    let mut doc =
        String::from("[[flows]]\nid = \"long\"\ntriggers = [{ keywords = [\"hola\"] }]\n");
    for i in 0..600 {
        doc.push_str(&format!(
            "[[flows.steps]]\nid = \"s{i}\"\nkind = \"action\"\nset = {{ n = {i} }}\n"
        ));
    }
    doc.push_str("[[flows.steps]]\nid = \"q\"\nkind = \"question\"\ntext = \"n={{ vars.n }}\"\nvar = \"x\"\n");
    // 601 steps in a row: over the default cap of 256 steps per inbound message.
    let errors = Bundle::from_text(&doc, 1, Capabilities::CURRENT).unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .contains("601 steps can run without waiting for the customer"),
        "{errors:#?}"
    );
    assert_eq!(errors[0].step.as_deref(), Some("s0"));
    // Under limits that allow it, it runs to the question, in constant stack.
    let limits = Limits {
        max_steps: 601,
        ..Limits::default()
    };
    let mut chat = Chat::within(&doc, &limits, limits);
    assert_eq!(chat.say("hola"), ["n=599"]);
    assert!(chat.ended().is_none());
}

fn straight_line(messages: usize) -> String {
    let mut doc =
        String::from("[[flows]]\nid = \"spam\"\ntriggers = [{ keywords = [\"hola\"] }]\n");
    for i in 0..messages {
        doc.push_str(&format!(
            "[[flows.steps]]\nid = \"m{i}\"\nkind = \"message\"\ntext = \"{i}\"\n"
        ));
    }
    doc.push_str(
        "[[flows.steps]]\nid = \"q\"\nkind = \"question\"\ntext = \"more?\"\nvar = \"x\"\n",
    );
    doc
}

#[test]
fn a_thousand_messages_in_a_row_are_refused_and_capped() {
    let doc = straight_line(1000);
    let errors = Bundle::from_text(&doc, 1, Capabilities::CURRENT).unwrap_err();
    let shown = errors[0].to_string();
    assert!(
        shown.contains("1001 messages can be sent without waiting for the customer")
            && shown.contains("pipeline.max_messages_per_event"),
        "{errors:#?}"
    );
    assert_eq!(
        (errors[0].flow.as_deref(), errors[0].step.as_deref()),
        (Some("spam"), Some("m0"))
    );
    // 1000 steps are over the default step cap too.
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("max_steps_per_event"))
    );
    // Accepted under generous limits, then run within the defaults: at most 20 sends,
    // a warning, and the conversation ends instead of standing on an unfinished step.
    let generous = Limits {
        max_messages: 2000,
        max_http: 5,
        max_steps: 2000,
    };
    let mut chat = Chat::within(&doc, &generous, Limits::default());
    let sent = chat.say("hola");
    assert_eq!(sent.len(), 20, "{sent:?}");
    assert_eq!(chat.ended(), Some(EndReason::Error));
    assert!(chat.last.iter().any(|e| matches!(e,
        Effect::Warning { message } if message.contains("more than 20 messages"))));
    assert!(chat.state.active.is_none() && chat.state.timers.is_empty());
    // The next message starts a new count.
    assert_eq!(chat.say("hola").len(), 20);
    // Within limits that allow it, all of it is sent.
    let mut chat = Chat::within(&doc, &generous, generous);
    assert_eq!(chat.say("hola").len(), 1001);
}

#[test]
fn http_requests_in_a_chain_count_against_one_inbound_message() {
    let mut doc = String::from("[[flows]]\nid = \"f\"\ntriggers = [{ keywords = [\"go\"] }]\n");
    for i in 0..6 {
        doc.push_str(&format!(
            "[[flows.steps]]\nid = \"h{i}\"\nkind = \"action\"\nhttp = {{ url = \"https://api.example.com/{i}\" }}\n"
        ));
    }
    doc.push_str("[[flows.steps]]\nid = \"done\"\nkind = \"end\"\ntext = \"ok\"\n");
    let errors = Bundle::from_text(&doc, 1, Capabilities::CURRENT).unwrap_err();
    assert!(
        errors[0].message.contains("6 HTTP requests can be made")
            && errors[0].step.as_deref() == Some("h0"),
        "{errors:#?}"
    );
    let generous = Limits {
        max_http: 10,
        ..Limits::default()
    };
    let mut chat = Chat::within(&doc, &generous, Limits::default());
    chat.say("go");
    let mut requests = 0;
    while let Some(request_id) = chat.last.iter().find_map(|e| match e {
        Effect::Http(request) => Some(request.request_id),
        _ => None,
    }) {
        requests += 1;
        chat.event(Event::Http {
            request_id,
            outcome: HttpOutcome::Response {
                status: 200,
                body: json!({}),
            },
        });
    }
    assert_eq!(requests, 5);
    assert_eq!(chat.ended(), Some(EndReason::Error));
    assert!(chat.last.iter().any(|e| matches!(e,
        Effect::Warning { message } if message.contains("more than 5 HTTP requests"))));
}

#[test]
fn a_message_while_a_request_is_pending_starts_its_own_count() {
    // Two requests per run at most (on_error leads to a second): valid under the limit.
    let doc = r#"
default_flow = "f"
expiry = "1h"
[[flows]]
id = "f"
[[flows.steps]]
id = "a"
kind = "action"
http = { url = "https://api.example.com/a", on_error = "b" }
[[flows.steps]]
id = "b"
kind = "action"
http = { url = "https://api.example.com/b" }
"#;
    let mut chat = Chat::new(doc);
    let fail = |chat: &mut Chat| {
        let request_id = chat
            .state
            .active
            .as_ref()
            .and_then(|a| match a.waiting {
                Waiting::Http { request_id } => Some(request_id),
                _ => None,
            })
            .unwrap_or(999);
        chat.event(Event::Http {
            request_id,
            outcome: HttpOutcome::Failed {
                error: "timeout".into(),
            },
        });
    };
    // The conversation expires while a request is pending, and the next message starts
    // it again: each message is a new event with its own budget, so no run meets the
    // limit however often this repeats.
    for _ in 0..4 {
        chat.say("hola");
        chat.now += Duration::minutes(61);
        fail(&mut chat);
        chat.say("hola");
        fail(&mut chat);
        chat.now += Duration::minutes(61);
        assert!(
            !chat.last.iter().any(|e| matches!(e,
                Effect::Warning { message } if message.contains("_per_event"))),
            "{:#?}",
            chat.last
        );
    }
    chat.say("hola");
    assert!(
        !chat.last.iter().any(|e| matches!(e,
            Effect::Warning { message } if message.contains("_per_event"))),
        "{:#?}",
        chat.last
    );
}

#[test]
fn variables_cannot_grow_past_their_bound() {
    let doc = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["go"] }]
steps = [
  { id = "ask", kind = "question", text = "more?", var = "answer" },
  { id = "grow", kind = "action", set = { big = "{{ vars.big }}{{ vars.answer }}" } },
  { id = "back", kind = "goto", step = "ask" },
]
"#;
    let mut chat = Chat::new(doc);
    chat.say("go");
    let chunk = "x".repeat(10_000);
    let mut refused = false;
    for _ in 0..10 {
        chat.say(&chunk);
        let size = serde_json::to_vec(&chat.state.vars).unwrap().len();
        assert!(size <= 64 * 1024, "{size}");
        refused |= chat.last.iter().any(|e| {
            matches!(e,
            Effect::Warning { message } if message.contains("vars."))
        });
    }
    assert!(refused, "the variables never reached the bound");
    // The conversation goes on.
    assert_eq!(chat.step_id(), "ask");
}

#[test]
fn huge_waits_are_refused_and_never_overflow() {
    let doc = r#"
[[flows]]
id = "f"
idle = { after = "10m", end_after = "100000000d" }
steps = [{ id = "q", kind = "question", text = "?", var = "x" }]
"#;
    let errors = Bundle::from_text(doc, 1, Capabilities::CURRENT).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.field.as_deref() == Some("idle.end_after")),
        "{errors:?}"
    );
}

#[test]
fn regex_answers_must_match_whole_and_missing_fields_print_nothing() {
    let doc = r#"
[[flows]]
id = "f"
triggers = [{ keywords = ["go"] }]
steps = [
  { id = "q", kind = "question", text = "pin?", var = "pin", validate = { type = "regex", pattern = "[0-9]{4}" } },
  { id = "e", kind = "end", text = "pin {{ vars.pin }}, {{ vars.pin.missing }}!" },
]
"#;
    let mut chat = Chat::new(doc);
    chat.say("go");
    assert_eq!(chat.say("no tengo, 12345678 quizás"), ["pin?"]);
    assert_eq!(chat.say("1234"), ["pin 1234, !"]);
}
