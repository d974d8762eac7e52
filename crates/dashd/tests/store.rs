//! Storage conformance: the same cases against every backend. SQLite always runs;
//! PostgreSQL runs when `DASHD_TEST_DATABASE_URL` points at a server (each test creates
//! and drops its own database) and is mandatory when `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::future::Future;
use std::sync::Arc;

use dash_core::api::{CreateBot, CreateTenant, UpdateBot, UpdateTenant};
use dash_core::api::{MessageBody, MessageState};
use dash_core::config::{Backend, Config};
use dash_core::flow::Format;
use dash_core::{BotRef, BotStatus, TenantStatus};
use dashd::store::conversations::{NewOutbound, StepCommit, TimerRow};
use dashd::store::inbound::{Ingested, NewInbound};
use dashd::store::outbox::{Lease, QueueQuery};
use dashd::store::timers::DueTimer;
use dashd::store::{self, MigrationPolicy, NewFlowVersion, Store, StoreError, TenantRef};
use serde_json::json;

/// A throwaway database of one backend.
enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    async fn sqlite() -> Self {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Self {
        let admin_url = std::env::var("DASHD_TEST_DATABASE_URL")
            .expect("DASHD_TEST_DATABASE_URL must name a PostgreSQL server");
        let name = format!("dashd_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin_url)
            .await
            .expect("the PostgreSQL server at DASHD_TEST_DATABASE_URL must be reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        TestDb::Postgres { admin_url, name }
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        match self {
            TestDb::Sqlite(dir) => config.data_dir = dir.path().to_owned(),
            TestDb::Postgres { admin_url, name } => {
                config.database.url = Some(dash_core::config::Secret::new(database_url(
                    admin_url, name,
                )));
            }
        }
        config
    }

    async fn open(&self, policy: Option<MigrationPolicy>) -> Result<Box<dyn Store>, StoreError> {
        store::open(&self.config(), policy).await
    }

    async fn drop_database(self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let pool = sqlx::PgPool::connect(&admin_url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
    }
}

/// Replaces the database name in a PostgreSQL URL.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_and_path = &base[scheme_end..];
    let authority = host_and_path.split('/').next().unwrap_or(host_and_path);
    format!("{}{authority}/{name}{query}", &base[..scheme_end])
}

/// Runs one case on a fresh, migrated database and cleans up even if it panics.
async fn with_store<F, Fut>(db: TestDb, case: F)
where
    F: FnOnce(Arc<dyn Store>, Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let store: Arc<dyn Store> = Arc::from(db.open(Some(MigrationPolicy::Apply)).await.unwrap());
    let db = Arc::new(db);
    let outcome = tokio::spawn(case(store.clone(), db.clone())).await;
    store.close().await;
    if let Ok(db) = Arc::try_unwrap(db) {
        db.drop_database().await;
    }
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

fn tenant(slug: &str) -> CreateTenant {
    CreateTenant {
        slug: slug.into(),
        name: Some(format!("{slug} SA")),
    }
}

fn bot(name: &str, phone: Option<&str>) -> CreateBot {
    CreateBot {
        name: name.into(),
        phone: phone.map(str::to_owned),
        timezone: Some("America/Argentina/Buenos_Aires".into()),
        settings: Some(
            json!({"greeting": "¡Hola! 👋", "chain": ["sandbox"], "hours": {"mon": [[9, 18]]}}),
        ),
        chain: None,
    }
}

fn path(tenant: &str, bot: &str) -> BotRef {
    BotRef::Path {
        tenant: tenant.into(),
        bot: bot.into(),
    }
}

fn slug(s: &str) -> TenantRef {
    TenantRef::Slug(s.into())
}

fn assert_conflict(err: StoreError, expected_field: Option<&str>) {
    match err {
        StoreError::Conflict { field, message } => {
            assert_eq!(field, expected_field, "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_not_found(err: StoreError) {
    assert!(
        matches!(err, StoreError::NotFound { .. }),
        "expected not found, got {err:?}"
    );
}

mod cases {
    use super::*;

    pub async fn idempotent_sends_queue_once_per_tenant_and_key(
        store: Arc<dyn Store>,
        _: Arc<TestDb>,
    ) {
        use dashd::store::outbox::Outbound;
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        let a = store
            .create_bot(&slug("acme"), &bot("shop", None))
            .await
            .unwrap();
        let b = store
            .create_bot(&slug("beta"), &bot("shop", None))
            .await
            .unwrap();
        let body = MessageBody {
            text: "confirmed".into(),
            ..Default::default()
        };
        let outbound = |bot: &dash_core::Bot| Outbound {
            bot_id: bot.id,
            tenant_id: bot.tenant_id,
            contact: "+15550001",
            body: &body,
            now: chrono::Utc::now(),
        };
        let (first, replayed) = store
            .enqueue_once(&outbound(&a), "k-1", "fp-1")
            .await
            .unwrap();
        assert!(!replayed);
        let (again, replayed) = store
            .enqueue_once(&outbound(&a), "k-1", "fp-1")
            .await
            .unwrap();
        assert!(replayed);
        assert_eq!(again.id, first.id);
        let other = store.enqueue_once(&outbound(&a), "k-1", "fp-2").await;
        assert!(
            matches!(other, Err(StoreError::Conflict { .. })),
            "{other:?}"
        );
        // Keys belong to their tenant: another tenant's same key is a new message.
        let (theirs, replayed) = store
            .enqueue_once(&outbound(&b), "k-1", "fp-1")
            .await
            .unwrap();
        assert!(!replayed);
        assert_ne!(theirs.id, first.id);
        // Concurrent first requests under one key still queue one message.
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let a = a.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let outbound = Outbound {
                        bot_id: a.id,
                        tenant_id: a.tenant_id,
                        contact: "+15550002",
                        body: &body,
                        now: chrono::Utc::now(),
                    };
                    store
                        .enqueue_once(&outbound, "k-race", "fp")
                        .await
                        .unwrap()
                        .0
                        .id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for racer in racers {
            ids.push(racer.await.unwrap());
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{ids:?}");
        let queued = store
            .queue(&QueueQuery {
                bot_id: Some(a.id),
                state: None,
                limit: 100,
            })
            .await
            .unwrap();
        assert_eq!(queued.len(), 2, "{queued:?}");
    }

    pub async fn business_data_stays_in_its_tenant(store: Arc<dyn Store>, _: Arc<TestDb>) {
        use dash_core::commerce::{
            NewOrder, NewOrderItem, OrderChange, OrderStatus, ProductInput, SellerInput,
        };
        use dashd::store::TenantScope;
        use dashd::store::commerce::OrderFilter;
        let a = store.create_tenant(&tenant("acme")).await.unwrap();
        let b = store.create_tenant(&tenant("beta")).await.unwrap();
        let (acme, beta) = (TenantScope::Tenant(a.id), TenantScope::Tenant(b.id));
        let product = ProductInput {
            sku: Some("ALF-12".into()),
            name: Some("Alfajores".into()),
            price_cents: Some(450_000),
            currency: Some("ARS".into()),
            stock: Some(Some(3)),
            ..Default::default()
        };
        let p = store.create_product(a.id, &product).await.unwrap();
        assert!(matches!(
            store.create_product(a.id, &product).await,
            Err(StoreError::Conflict { .. })
        ));
        // The same SKU in another tenant is another product.
        store.create_product(b.id, &product).await.unwrap();
        let theirs = store
            .create_seller(
                b.id,
                &SellerInput {
                    name: Some("Bo".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let order = |quantity: i64, seller: Option<uuid::Uuid>| NewOrder {
            contact: "+5491100000001".into(),
            customer_name: Some("Ana".into()),
            items: vec![NewOrderItem {
                sku: Some("ALF-12".into()),
                name: None,
                unit_price_cents: None,
                quantity,
            }],
            currency: None,
            seller_id: seller,
            notes: None,
        };
        let first = store.create_order(a.id, &order(2, None)).await.unwrap();
        assert_eq!(
            (first.total_cents, first.currency.as_str()),
            (900_000, "ARS")
        );
        assert_eq!(store.product(acme, p.id).await.unwrap().stock, Some(1));
        // Short stock and another tenant's seller are refused, and change nothing.
        assert!(matches!(
            store.create_order(a.id, &order(2, None)).await,
            Err(StoreError::Conflict { .. })
        ));
        assert!(matches!(
            store.create_order(a.id, &order(1, Some(theirs.id))).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(store.product(acme, p.id).await.unwrap().stock, Some(1));
        // Scopes: beta sees none of it.
        assert!(matches!(
            store.order(beta, first.id).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.product(beta, p.id).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.customer(beta, first.customer_id).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(
            store
                .orders_page(beta, None, 10, &OrderFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        let change = OrderChange {
            status: Some(OrderStatus::Cancelled),
            ..Default::default()
        };
        assert!(matches!(
            store.change_order(beta, first.id, &change).await,
            Err(StoreError::NotFound { .. })
        ));
        // States move forward only; cancelling gives the stock back.
        let skip = OrderChange {
            status: Some(OrderStatus::Shipped),
            ..Default::default()
        };
        assert!(matches!(
            store.change_order(acme, first.id, &skip).await,
            Err(StoreError::Conflict { .. })
        ));
        let cancelled = store.change_order(acme, first.id, &change).await.unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert_eq!(cancelled.items.len(), 1);
        assert_eq!(store.product(acme, p.id).await.unwrap().stock, Some(3));
        // Events: acme's stream has its two, beta's none; trimming keeps the newest.
        let events = store.events_after(a.id, 0, 100).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["order.created", "order.updated"]);
        assert!(store.events_after(b.id, 0, 100).await.unwrap().is_empty());
        assert_eq!(store.last_event(a.id).await.unwrap(), events[1].seq);
        assert_eq!(store.trim_events(1).await.unwrap(), 1);
        assert_eq!(store.events_after(a.id, 0, 100).await.unwrap().len(), 1);

        // A step's order the catalogue refuses is left out; the step still commits.
        let shop = store
            .create_bot(&slug("acme"), &bot("shop", None))
            .await
            .unwrap();
        let mut step = commit(&shop, "+5491100000002");
        let vars =
            serde_json::Map::from_iter([("email".to_owned(), serde_json::json!("x@y.example"))]);
        step.orders.push((order(1, None), vars.clone()));
        let mut unknown = order(1, None);
        unknown.items[0].sku = Some("NOPE".into());
        step.orders.push((unknown, vars));
        assert!(store.commit_step(&step).await.unwrap().is_some());
        let orders = store
            .orders_page(acme, None, 10, &OrderFilter::default())
            .await
            .unwrap();
        assert_eq!(orders.len(), 2, "{orders:?}");
        assert_eq!(orders[1].source, "flow");
        assert_eq!(orders[1].bot_id, Some(shop.id));
        let customer = store.customer(acme, orders[1].customer_id).await.unwrap();
        assert_eq!(customer.vars["email"], "x@y.example");
        assert!(
            store
                .conversation_row(shop.id, "+5491100000002")
                .await
                .unwrap()
                .is_some()
        );
    }

    pub async fn the_event_stream_merges_its_records_per_tenant(
        store: Arc<dyn Store>,
        _: Arc<TestDb>,
    ) {
        use dashd::store::events::StreamCursor;
        let a = store.create_tenant(&tenant("acme")).await.unwrap();
        let b = store.create_tenant(&tenant("beta")).await.unwrap();
        let bot_a = store
            .create_bot(&slug("acme"), &bot("shop", None))
            .await
            .unwrap();
        let bot_b = store
            .create_bot(&slug("beta"), &bot("shop", None))
            .await
            .unwrap();
        let start_a = store.stream_position(a.id).await.unwrap();
        let start_b = store.stream_position(b.id).await.unwrap();
        store
            .ingest(&inbound(&bot_a, "+1555", Some("w1"), "hola"))
            .await
            .unwrap();
        store
            .ingest(&inbound(&bot_b, "+1666", Some("w2"), "hi"))
            .await
            .unwrap();
        let body = MessageBody {
            text: "welcome".into(),
            ..MessageBody::default()
        };
        store
            .enqueue(bot_a.id, a.id, "+1555", &body, chrono::Utc::now())
            .await
            .unwrap();
        store
            .record_event(a.id, "order.created", &serde_json::json!({"n": 1}))
            .await
            .unwrap();
        let events = store.stream_after(a.id, start_a, 100).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["message.in", "message.out", "order.created"],
            "{events:?}"
        );
        assert_eq!(events[0].data["text"], "hola");
        assert_eq!(events[1].data["text"], "welcome");
        // Resuming after any event gives exactly what followed it.
        let after_first = store
            .stream_after(a.id, events[0].cursor, 100)
            .await
            .unwrap();
        assert_eq!(after_first.len(), 2);
        let last = events[2].cursor;
        assert!(
            store
                .stream_after(a.id, last, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(StreamCursor::parse(&last.to_string()), Some(last));
        // The other tenant sees its own message only.
        let theirs = store.stream_after(b.id, start_b, 100).await.unwrap();
        let kinds: Vec<&str> = theirs.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["message.in"], "{theirs:?}");
        assert_eq!(theirs[0].data["text"], "hi");
    }

    pub async fn providers_contacts_and_attempts(store: Arc<dyn Store>, _: Arc<TestDb>) {
        use dashd::store::contacts::ContactIdentity;
        use dashd::store::outbox::SendAttempt;
        use dashd::store::providers::StoredProvider;
        store.create_tenant(&tenant("acme")).await.unwrap();
        let a = store
            .create_bot(&slug("acme"), &bot("a", None))
            .await
            .unwrap();
        let b = store
            .create_bot(&slug("acme"), &bot("b", None))
            .await
            .unwrap();
        let now = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
        let entry = |bot_id, route: &str| StoredProvider {
            bot_id,
            provider: "meta".into(),
            settings: [("phone_number_id".to_owned(), route.to_owned())].into(),
            secrets: Some("v1:sealed".into()),
            route_key: Some(route.to_owned()),
            updated_at: now,
        };
        store.put_provider(&entry(a.id, "111")).await.unwrap();
        // Another bot cannot take the same number on the same provider.
        assert_conflict(
            store.put_provider(&entry(b.id, "111")).await.unwrap_err(),
            Some("settings"),
        );
        store.put_provider(&entry(b.id, "222")).await.unwrap();
        // Writing again replaces.
        store.put_provider(&entry(a.id, "333")).await.unwrap();
        assert_eq!(
            store.providers_of(a.id).await.unwrap(),
            [entry(a.id, "333")]
        );
        assert_eq!(store.bot_by_route("meta", "333").await.unwrap(), Some(a.id));
        assert_eq!(store.bot_by_route("meta", "111").await.unwrap(), None);
        assert_eq!(store.all_providers().await.unwrap().len(), 2);
        assert!(store.delete_provider(b.id, "meta").await.unwrap());
        assert!(!store.delete_provider(b.id, "meta").await.unwrap());

        // The master key's check value is stored once.
        assert_eq!(store.secret_check().await.unwrap(), None);
        assert_eq!(
            store.init_secret_check("first", now).await.unwrap(),
            "first"
        );
        assert_eq!(
            store.init_secret_check("second", now).await.unwrap(),
            "first"
        );

        // Contacts: BSUID first, then phone and BSUID: one contact, keyed by the BSUID.
        let ids = |phone: Option<&str>, bsuid: Option<&str>| ContactIdentity {
            phone: phone.map(str::to_owned),
            bsuid: bsuid.map(str::to_owned),
            ..ContactIdentity::default()
        };
        let key = store
            .resolve_contact(a.id, &ids(None, Some("US.1")), now)
            .await
            .unwrap();
        assert_eq!(key, "US.1");
        let by_key = |store: &Arc<dyn Store>| {
            let store = store.clone();
            async move { store.contact_by_key(a.id, "US.1").await.unwrap().unwrap() }
        };
        // Read (and, on SQLite, kept in memory) before the contact changes: every read
        // after the change sees it.
        assert_eq!(by_key(&store).await.phone, None);
        let again = store
            .resolve_contact(a.id, &ids(Some("+15550001"), Some("US.1")), now)
            .await
            .unwrap();
        assert_eq!(again, "US.1");
        assert_eq!(by_key(&store).await.phone.as_deref(), Some("+15550001"));
        let found = store
            .find_contact(a.id, "+15550001")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.contact.as_str(), found.bsuid.as_deref()),
            ("US.1", Some("US.1"))
        );
        // The same identifiers on another bot are another contact.
        assert_eq!(
            store
                .resolve_contact(b.id, &ids(Some("+15550001"), None), now)
                .await
                .unwrap(),
            "+15550001"
        );
        // Two contacts named by one webhook: the older keeps both identifiers.
        let later = now + chrono::Duration::seconds(1);
        store
            .resolve_contact(a.id, &ids(Some("+15550002"), None), later)
            .await
            .unwrap();
        let merged = store
            .resolve_contact(a.id, &ids(Some("+15550002"), Some("US.1")), later)
            .await
            .unwrap();
        assert_eq!(merged, "US.1");
        assert_eq!(
            store
                .find_contact(a.id, "+15550002")
                .await
                .unwrap()
                .unwrap()
                .contact,
            "US.1"
        );
        // A new BSUID moves to the contact.
        assert_eq!(by_key(&store).await.bsuid.as_deref(), Some("US.1"));
        assert!(
            store
                .change_bsuid(a.id, "US.1", "US.2", later)
                .await
                .unwrap()
        );
        assert_eq!(by_key(&store).await.bsuid.as_deref(), Some("US.2"));
        assert_eq!(
            store
                .find_contact(a.id, "US.2")
                .await
                .unwrap()
                .unwrap()
                .contact,
            "US.1"
        );
        assert!(
            !store
                .change_bsuid(a.id, "US.1", "US.3", later)
                .await
                .unwrap()
        );

        // Messages from the business's own phone are logged once per provider id.
        let mine = NewInbound {
            bot_id: a.id,
            tenant_id: a.tenant_id,
            contact: "US.1".into(),
            provider: "evolution".into(),
            provider_message_id: Some("BAE5MINE".into()),
            body: MessageBody {
                text: "typed on the phone".into(),
                ..MessageBody::default()
            },
            received_at: now,
        };
        assert!(store.log_from_me(&mine).await.unwrap());
        assert!(!store.log_from_me(&mine).await.unwrap());
        let logged = store.conversation(a.id, "US.1").await.unwrap().unwrap();
        assert_eq!(logged.transcript.len(), 1);
        assert_eq!(logged.transcript[0].state, MessageState::Sent);

        // Attempts are kept in order; a refused entry is failed without retry.
        let record = store
            .enqueue(
                a.id,
                a.tenant_id,
                "+15550001",
                &MessageBody {
                    text: "x".into(),
                    ..MessageBody::default()
                },
                now,
            )
            .await
            .unwrap();
        for (provider, outcome) in [("meta", "retryable"), ("twilio", "permanent")] {
            store
                .record_attempt(
                    record.id,
                    &SendAttempt {
                        provider: provider.into(),
                        outcome: outcome.into(),
                        error_code: Some("131000".into()),
                        error: Some("boom".into()),
                        latency_ms: 12,
                        at: now,
                    },
                )
                .await
                .unwrap();
        }
        let attempts = store.attempts(record.id).await.unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            (attempts[0].provider.as_str(), attempts[1].outcome.as_str()),
            ("meta", "permanent")
        );
        assert!(store.claim(record.id, &lease(), now).await.unwrap());
        assert!(
            !store
                .mark_refused(record.id, "someone-else", "no", now)
                .await
                .unwrap()
        );
        assert!(
            store
                .mark_refused(record.id, OWNER, "twilio: (21211) invalid To", now)
                .await
                .unwrap()
        );
        let entry = store.queue_entry(record.id).await.unwrap();
        assert_eq!(entry.message.state, MessageState::Failed);
        assert!(entry.message.next_attempt_at.is_none());
        // A refused message does not hold back the contact's later ones.
        let next = store
            .enqueue(
                a.id,
                a.tenant_id,
                "+15550001",
                &MessageBody {
                    text: "y".into(),
                    ..MessageBody::default()
                },
                now,
            )
            .await
            .unwrap();
        let due: Vec<_> = store
            .due_outbound(now.timestamp_millis() + 1, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(due, [next.id]);
        assert_eq!(store.unfinished_outbound(a.id).await.unwrap(), 1);
        // Delivery reports apply only to the bot's own messages.
        assert!(store.claim(next.id, &lease(), now).await.unwrap());
        // The successful attempt and the sent mark go together; only the holder marks.
        let sent = SendAttempt {
            provider: "meta".into(),
            outcome: "sent".into(),
            error_code: None,
            error: None,
            latency_ms: 7,
            at: now,
        };
        assert!(
            !store
                .mark_sent_after(next.id, "someone-else", "wamid.Z", &sent)
                .await
                .unwrap()
        );
        assert!(
            store
                .mark_sent_after(next.id, OWNER, "wamid.Y", &sent)
                .await
                .unwrap()
        );
        let entry = store.queue_entry(next.id).await.unwrap();
        assert_eq!(entry.message.state, MessageState::Sent);
        assert_eq!(
            entry.message.provider_message_id.as_deref(),
            Some("wamid.Y")
        );
        let attempts = store.attempts(next.id).await.unwrap();
        assert_eq!(attempts.len(), 2, "each attempt is recorded");
        assert_eq!(attempts[1].outcome, "sent");
        assert!(
            !store
                .apply_status(b.id, "meta", "wamid.Y", MessageState::Delivered, now)
                .await
                .unwrap()
        );
        assert!(
            store
                .apply_status(a.id, "meta", "wamid.Y", MessageState::Delivered, now)
                .await
                .unwrap()
        );
        // A released entry is pending again, its attempts unchanged.
        let held = store
            .enqueue(
                a.id,
                a.tenant_id,
                "+15550009",
                &MessageBody {
                    text: "z".into(),
                    ..MessageBody::default()
                },
                now,
            )
            .await
            .unwrap();
        assert!(store.claim(held.id, &lease(), now).await.unwrap());
        assert!(
            store
                .release(held.id, OWNER, now.timestamp_millis() + 5000)
                .await
                .unwrap()
        );
        let entry = store.queue_entry(held.id).await.unwrap();
        assert_eq!(
            (entry.message.state, entry.message.attempts),
            (MessageState::Pending, 0)
        );

        // A number that changed hands: the newcomer never gets the old contact's key.
        let later = now + chrono::Duration::seconds(5);
        let first = store
            .resolve_contact(a.id, &ids(Some("+15557770000"), Some("US.77")), later)
            .await
            .unwrap();
        assert_eq!(first, "+15557770000");
        // The same person (same BSUID) now writes from another number.
        let same = store
            .resolve_contact(a.id, &ids(Some("+15557770001"), Some("US.77")), later)
            .await
            .unwrap();
        assert_eq!(same, first);
        // Someone else writes from the old number: another contact, another key.
        let newcomer = store
            .resolve_contact(a.id, &ids(Some("+15557770000"), None), later)
            .await
            .unwrap();
        assert_ne!(newcomer, first);
        assert_eq!(
            store
                .find_contact(a.id, "+15557770000")
                .await
                .unwrap()
                .unwrap()
                .contact,
            newcomer
        );
    }

    pub async fn sessions_keep_state_qr_phone_and_history(store: Arc<dyn Store>, _: Arc<TestDb>) {
        use dashd::store::sessions::SessionReport;
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        let a = store
            .create_bot(&slug("acme"), &bot("a", None))
            .await
            .unwrap();
        let b = store
            .create_bot(&slug("beta"), &bot("b", None))
            .await
            .unwrap();
        let t0 = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
        let report =
            |bot_id, state: &str, qr: Option<&str>, phone: Option<&str>, secs: i64| SessionReport {
                bot_id,
                provider: "baileys".into(),
                session: "s1".into(),
                state: state.into(),
                reason: (state == "disconnected").then(|| "connection lost".into()),
                phone: phone.map(str::to_owned),
                qr: qr.map(str::to_owned),
                qr_expires_at: qr.map(|_| t0 + chrono::Duration::seconds(secs + 60)),
                pairing_code: None,
                at: t0 + chrono::Duration::seconds(secs),
            };
        let (view, changed) = store
            .record_session(&report(a.id, "qr", Some("2@one"), None, 0))
            .await
            .unwrap();
        assert!(changed);
        assert_eq!(
            (view.bot.as_str(), view.qr.as_deref()),
            ("acme/a", Some("2@one"))
        );
        // A rotated QR: same state, new code, `since` unchanged.
        let (view, changed) = store
            .record_session(&report(a.id, "qr", Some("2@two"), None, 20))
            .await
            .unwrap();
        assert!(!changed);
        assert_eq!((view.qr.as_deref(), view.since), (Some("2@two"), t0));
        assert_eq!(view.qr_expires_at, Some(t0 + chrono::Duration::seconds(80)));
        // A pairing code comes on its own report and stays beside the QR while pairing.
        let (view, _) = store
            .record_session(&SessionReport {
                pairing_code: Some("ABCD-EFGH".into()),
                ..report(a.id, "qr", None, None, 25)
            })
            .await
            .unwrap();
        assert_eq!(
            (view.qr.as_deref(), view.pairing_code.as_deref()),
            (Some("2@two"), Some("ABCD-EFGH"))
        );
        assert_eq!(view.qr_expires_at, Some(t0 + chrono::Duration::seconds(80)));
        // Paired: the QR goes, the phone stays even when later reports omit it.
        let (view, _) = store
            .record_session(&report(a.id, "ready", None, Some("+15551234567"), 30))
            .await
            .unwrap();
        assert_eq!(
            (view.qr, view.phone.as_deref()),
            (None, Some("+15551234567"))
        );
        assert_eq!((view.qr_expires_at, view.pairing_code), (None, None));
        let (view, changed) = store
            .record_session(&report(a.id, "disconnected", None, None, 40))
            .await
            .unwrap();
        assert!(changed);
        assert_eq!(view.phone.as_deref(), Some("+15551234567"));
        store
            .record_session(&report(b.id, "qr", Some("2@b"), None, 0))
            .await
            .unwrap();
        let shown = store.bot_sessions(a.id, Some("baileys"), 10).await.unwrap();
        let states: Vec<&str> = shown[0].history.iter().map(|c| c.state.as_str()).collect();
        assert_eq!(states, ["qr", "ready", "disconnected"]);
        assert_eq!(
            shown[0].history[2].reason.as_deref(),
            Some("connection lost")
        );
        // Tenants see their own.
        let acme = store.tenant(&slug("acme")).await.unwrap();
        let listed = store.sessions(Some(acme.id)).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].bot, "acme/a");
        assert_eq!(store.sessions(None).await.unwrap().len(), 2);
        assert!(
            store
                .bot_sessions(a.id, Some("venom"), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn tenants_round_trip(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let created = store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        assert_eq!(created.status, TenantStatus::Active);
        assert_eq!(store.tenant(&slug("acme")).await.unwrap(), created);
        assert_eq!(
            store.tenant(&TenantRef::Id(created.id)).await.unwrap(),
            created
        );
        let slugs: Vec<String> = store
            .list_tenants()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.slug)
            .collect();
        assert_eq!(slugs, ["acme", "beta"]);

        let updated = store
            .update_tenant(
                &slug("acme"),
                &UpdateTenant {
                    name: Some("Acme Corp".into()),
                    status: Some(TenantStatus::Suspended),
                    api_rate_per_minute: Some(30),
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.name, "Acme Corp");
        assert_eq!(updated.status, TenantStatus::Suspended);
        assert_eq!(updated.api_rate_per_minute, Some(30));
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(store.tenant(&slug("acme")).await.unwrap(), updated);

        // Only the fields present change.
        let renamed = store
            .update_tenant(
                &slug("acme"),
                &UpdateTenant {
                    name: Some("A".into()),
                    status: None,
                    api_rate_per_minute: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(renamed.status, TenantStatus::Suspended);
        assert_eq!(renamed.api_rate_per_minute, Some(30));

        let (deleted, bots) = store.delete_tenant(&slug("acme"), false).await.unwrap();
        assert_eq!((deleted.id, bots), (created.id, 0));
        assert_not_found(store.tenant(&slug("acme")).await.unwrap_err());
        assert_eq!(store.counts().await.unwrap(), (1, 0));
    }

    pub async fn duplicate_slug_conflicts(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        assert_conflict(
            store.create_tenant(&tenant("acme")).await.unwrap_err(),
            Some("slug"),
        );
        assert_eq!(store.list_tenants().await.unwrap().len(), 1);
    }

    pub async fn missing_records_are_not_found(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let ghost = slug("ghost");
        assert_not_found(store.tenant(&ghost).await.unwrap_err());
        assert_not_found(
            store
                .tenant(&TenantRef::Id(uuid::Uuid::new_v4()))
                .await
                .unwrap_err(),
        );
        assert_not_found(
            store
                .update_tenant(&ghost, &UpdateTenant::default())
                .await
                .unwrap_err(),
        );
        assert_not_found(store.delete_tenant(&ghost, true).await.unwrap_err());
        assert_not_found(
            store
                .create_bot(&ghost, &bot("sales", None))
                .await
                .unwrap_err(),
        );
        assert_not_found(store.list_bots(Some(&ghost)).await.unwrap_err());
        assert_not_found(store.bot(&path("ghost", "sales")).await.unwrap_err());
        assert_not_found(
            store
                .bot(&BotRef::Id(uuid::Uuid::new_v4()))
                .await
                .unwrap_err(),
        );
        assert_not_found(
            store
                .update_bot(&path("ghost", "sales"), &UpdateBot::default())
                .await
                .unwrap_err(),
        );
        assert_not_found(store.delete_bot(&path("ghost", "sales")).await.unwrap_err());
    }

    pub async fn bots_round_trip(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let owner = store.create_tenant(&tenant("acme")).await.unwrap();
        let created = store
            .create_bot(&slug("acme"), &bot("sales", Some("+5491123456789")))
            .await
            .unwrap();
        assert_eq!(created.tenant, "acme");
        assert_eq!(created.tenant_id, owner.id);
        assert_eq!(created.status, BotStatus::Active);
        assert_eq!(store.bot(&path("acme", "sales")).await.unwrap(), created);
        assert_eq!(store.bot(&BotRef::Id(created.id)).await.unwrap(), created);
        assert_eq!(created.settings["greeting"], "¡Hola! 👋");

        let updated = store
            .update_bot(
                &BotRef::Id(created.id),
                &UpdateBot {
                    name: Some("ventas".into()),
                    phone: Some(None),
                    timezone: Some("Europe/Madrid".into()),
                    status: Some(BotStatus::Paused),
                    settings: Some(json!({"v": 2})),
                    chain: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.name, "ventas");
        assert_eq!(updated.phone, None);
        assert_eq!(updated.timezone, "Europe/Madrid");
        assert_eq!(updated.status, BotStatus::Paused);
        assert_eq!(updated.settings, json!({"v": 2}));
        assert_eq!(store.bot(&path("acme", "ventas")).await.unwrap(), updated);
        assert_not_found(store.bot(&path("acme", "sales")).await.unwrap_err());

        let phone_only = store
            .update_bot(
                &path("acme", "ventas"),
                &UpdateBot {
                    phone: Some(Some("+14155552671".into())),
                    ..UpdateBot::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(phone_only.phone.as_deref(), Some("+14155552671"));
        assert_eq!(phone_only.timezone, "Europe/Madrid");

        let deleted = store.delete_bot(&path("acme", "ventas")).await.unwrap();
        assert_eq!(deleted.id, created.id);
        assert_not_found(store.bot(&BotRef::Id(created.id)).await.unwrap_err());
        assert_eq!(store.counts().await.unwrap(), (1, 0));
    }

    pub async fn bot_names_are_unique_per_tenant(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        store
            .create_bot(&slug("acme"), &bot("support", None))
            .await
            .unwrap();
        // The same name under another tenant is a different bot.
        let other = store
            .create_bot(&slug("beta"), &bot("sales", None))
            .await
            .unwrap();
        assert_conflict(
            store
                .create_bot(&slug("acme"), &bot("sales", None))
                .await
                .unwrap_err(),
            Some("name"),
        );
        let rename = UpdateBot {
            name: Some("sales".into()),
            ..UpdateBot::default()
        };
        assert_conflict(
            store
                .update_bot(&path("acme", "support"), &rename)
                .await
                .unwrap_err(),
            Some("name"),
        );
        assert_eq!(
            store.bot(&path("beta", "sales")).await.unwrap().id,
            other.id
        );
    }

    pub async fn phones_are_unique_across_bots(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", Some("+5491123456789")))
            .await
            .unwrap();
        assert_conflict(
            store
                .create_bot(&slug("beta"), &bot("sales", Some("+5491123456789")))
                .await
                .unwrap_err(),
            Some("phone"),
        );
        // Any number of bots may have no phone.
        store
            .create_bot(&slug("beta"), &bot("a1", None))
            .await
            .unwrap();
        store
            .create_bot(&slug("beta"), &bot("a2", None))
            .await
            .unwrap();
        let steal = UpdateBot {
            phone: Some(Some("+5491123456789".into())),
            ..UpdateBot::default()
        };
        assert_conflict(
            store
                .update_bot(&path("beta", "a1"), &steal)
                .await
                .unwrap_err(),
            Some("phone"),
        );
        assert_eq!(store.bot(&path("beta", "a1")).await.unwrap().phone, None);
    }

    pub async fn users_sessions_and_keys_stay_in_their_tenant(
        store: Arc<dyn Store>,
        _: Arc<TestDb>,
    ) {
        use dash_core::access::{CreateApiKey, CreateUser, Role, Scope, UpdateUser, UserStatus};
        use dashd::store::TenantScope;
        use dashd::store::users::{Refreshed, UserRef};
        let a = store.create_tenant(&tenant("acme")).await.unwrap();
        let b = store.create_tenant(&tenant("beta")).await.unwrap();
        let user = |tenant: Option<&str>, email: &str, role: Role| CreateUser {
            tenant: tenant.map(str::to_owned),
            email: email.into(),
            name: None,
            role,
            password: "not checked by the store".into(),
        };
        let owner = store
            .create_user(
                Some(&slug("acme")),
                &user(Some("acme"), "ana@acme.example", Role::Owner),
                "hash-1",
            )
            .await
            .unwrap();
        let agent = store
            .create_user(
                Some(&slug("beta")),
                &user(Some("beta"), "bo@beta.example", Role::Agent),
                "hash-2",
            )
            .await
            .unwrap();
        let root = store
            .create_user(
                None,
                &user(None, "root@platform.example", Role::Admin),
                "hash-3",
            )
            .await
            .unwrap();
        assert_eq!(owner.tenant.as_deref(), Some("acme"));
        assert_eq!(root.tenant_id, None);
        // Emails are unique across tenants; the schema refuses an admin with a tenant.
        let again = store
            .create_user(
                Some(&slug("beta")),
                &user(Some("beta"), "ana@acme.example", Role::Viewer),
                "h",
            )
            .await;
        assert!(
            matches!(again, Err(StoreError::Conflict { .. })),
            "{again:?}"
        );
        assert!(
            store
                .create_user(
                    Some(&slug("beta")),
                    &user(Some("beta"), "x@beta.example", Role::Admin),
                    "h"
                )
                .await
                .is_err()
        );

        // Scopes: a tenant sees its own users only; another's is not found.
        let acme = TenantScope::Tenant(a.id);
        let listed = store.list_users(acme).await.unwrap();
        assert_eq!(listed.iter().map(|u| u.id).collect::<Vec<_>>(), [owner.id]);
        assert_eq!(store.list_users(TenantScope::All).await.unwrap().len(), 3);
        for found in [
            store.user(acme, &UserRef::Id(agent.id)).await,
            store
                .user(acme, &UserRef::Email("bo@beta.example".into()))
                .await,
            store.user(acme, &UserRef::Id(root.id)).await,
        ] {
            assert!(
                matches!(found, Err(StoreError::NotFound { .. })),
                "{found:?}"
            );
        }
        let disable = UpdateUser {
            status: Some(UserStatus::Disabled),
            ..Default::default()
        };
        assert!(matches!(
            store
                .update_user(acme, &UserRef::Id(agent.id), &disable)
                .await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete_user(acme, &UserRef::Id(agent.id)).await,
            Err(StoreError::NotFound { .. })
        ));
        // The last owner stays an owner.
        let demote = UpdateUser {
            role: Some(Role::Viewer),
            ..Default::default()
        };
        assert!(matches!(
            store
                .update_user(acme, &UserRef::Id(owner.id), &demote)
                .await,
            Err(StoreError::Conflict { .. })
        ));
        let (found, hash) = store
            .user_for_login("ana@acme.example")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id, hash.as_str()), (owner.id, "hash-1"));

        // Sessions: a refresh token is traded once; a second use ends the session.
        let session = uuid::Uuid::now_v7();
        let later = chrono::Utc::now() + chrono::Duration::days(1);
        store
            .start_session(owner.id, session, "r1", later)
            .await
            .unwrap();
        assert_eq!(
            store.session_user(session).await.unwrap().unwrap().id,
            owner.id
        );
        assert_eq!(store.session_of_refresh("r1").await.unwrap(), Some(session));
        match store.rotate_refresh("r1", "r2", later).await.unwrap() {
            Refreshed::Rotated { session: s, user } => {
                assert_eq!((s, user.id), (session, owner.id))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.rotate_refresh("r1", "r3", later).await.unwrap(),
            Refreshed::Reused { session }
        );
        assert!(store.session_user(session).await.unwrap().is_none());
        assert_eq!(
            store.rotate_refresh("r2", "r4", later).await.unwrap(),
            Refreshed::Invalid
        );
        assert_eq!(
            store.rotate_refresh("unknown", "r5", later).await.unwrap(),
            Refreshed::Invalid
        );
        // A password change ends the user's sessions; so does disabling it.
        let second = uuid::Uuid::now_v7();
        store
            .start_session(agent.id, second, "s1", later)
            .await
            .unwrap();
        store
            .set_password(TenantScope::Tenant(b.id), &UserRef::Id(agent.id), "hash-9")
            .await
            .unwrap();
        assert!(store.session_user(second).await.unwrap().is_none());
        let third = uuid::Uuid::now_v7();
        store
            .start_session(agent.id, third, "s2", later)
            .await
            .unwrap();
        assert!(store.revoke_session(third, "logged out").await.unwrap());
        assert!(!store.revoke_session(third, "logged out").await.unwrap());
        assert!(store.session_user(third).await.unwrap().is_none());

        // Keys: listed and revoked within their tenant only.
        let req = CreateApiKey {
            tenant: None,
            name: "erp".into(),
            scopes: vec![Scope::OrdersRead, Scope::MessagesSend],
            expires_at: None,
        };
        let key = store
            .create_api_key(&slug("acme"), &req, "dsk_aaaaaaaaaaaa", "khash")
            .await
            .unwrap();
        assert_eq!(key.scopes, req.scopes);
        let (found, hash) = store
            .api_key_by_prefix("dsk_aaaaaaaaaaaa")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id, hash.as_str()), (key.id, "khash"));
        assert!(
            store
                .list_api_keys(TenantScope::Tenant(b.id))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            store
                .revoke_api_key(TenantScope::Tenant(b.id), key.id)
                .await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(
            store
                .api_key_by_prefix("dsk_aaaaaaaaaaaa")
                .await
                .unwrap()
                .unwrap()
                .0
                .revoked_at
                .is_none()
        );
        let revoked = store.revoke_api_key(acme, key.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        store
            .touch_api_key(key.id, chrono::Utc::now())
            .await
            .unwrap();
        assert!(
            store.list_api_keys(acme).await.unwrap()[0]
                .last_used_at
                .is_some()
        );
        // Deleting a tenant takes its users and keys.
        store.delete_tenant(&slug("acme"), true).await.unwrap();
        assert!(
            store
                .user_for_login("ana@acme.example")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .api_key_by_prefix("dsk_aaaaaaaaaaaa")
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn tenants_are_isolated(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        store
            .create_bot(&slug("acme"), &bot("alpha", None))
            .await
            .unwrap();
        store
            .create_bot(&slug("beta"), &bot("sales", None))
            .await
            .unwrap();
        let acme: Vec<String> = store
            .list_bots(Some(&slug("acme")))
            .await
            .unwrap()
            .iter()
            .map(|b| b.path())
            .collect();
        assert_eq!(acme, ["acme/alpha", "acme/sales"]);
        let all: Vec<String> = store
            .list_bots(None)
            .await
            .unwrap()
            .iter()
            .map(|b| b.path())
            .collect();
        assert_eq!(all, ["acme/alpha", "acme/sales", "beta/sales"]);
        assert_eq!(store.counts().await.unwrap(), (2, 3));
    }

    pub async fn tenant_with_bots_needs_force(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", Some("+5491123456789")))
            .await
            .unwrap();
        store
            .create_bot(&slug("acme"), &bot("support", None))
            .await
            .unwrap();
        store
            .create_bot(&slug("beta"), &bot("sales", None))
            .await
            .unwrap();
        assert_conflict(
            store.delete_tenant(&slug("acme"), false).await.unwrap_err(),
            None,
        );
        assert_eq!(store.list_bots(Some(&slug("acme"))).await.unwrap().len(), 2);

        let (_, removed) = store.delete_tenant(&slug("acme"), true).await.unwrap();
        assert_eq!(removed, 2);
        assert_eq!(store.counts().await.unwrap(), (1, 1));
        assert_not_found(store.bot(&path("acme", "sales")).await.unwrap_err());
        // The number is free again once its bot is gone.
        store
            .create_bot(&slug("beta"), &bot("new", Some("+5491123456789")))
            .await
            .unwrap();
    }

    pub async fn data_survives_reopening(store: Arc<dyn Store>, db: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        let created = store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        store.close().await;
        let reopened = db.open(None).await.unwrap();
        assert_eq!(
            reopened.bot(&BotRef::Id(created.id)).await.unwrap(),
            created
        );
        reopened.close().await;
    }

    pub async fn health_and_schema(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.ping().await.unwrap();
        // Health includes a write probe on both backends.
        assert_eq!(store.health().await.reason(), None);
        let migrations = std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../migrations/sqlite"
        ))
        .unwrap()
        .count();
        assert_eq!(store.schema_version().await.unwrap(), migrations as i64);
        assert!(!store.location().contains("password"));
    }

    pub async fn flow_versions_round_trip(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        store
            .create_bot(&slug("acme"), &bot("other", None))
            .await
            .unwrap();
        let sales = path("acme", "sales");
        assert_not_found(store.flow_version(&sales, None).await.unwrap_err());
        let new = |n: i64| NewFlowVersion {
            format: Format::Toml,
            source: format!("# version {n}\n"),
            document: json!({"flows": [{"id": "f", "steps": []}], "n": n, "text": "¿Qué tal? ✓"}),
        };
        let v1 = store
            .create_flow_version(&sales, &new(1), false)
            .await
            .unwrap();
        assert_eq!((v1.version, v1.active), (1, false));
        let v2 = store
            .create_flow_version(&sales, &new(2), true)
            .await
            .unwrap();
        assert_eq!((v2.version, v2.active), (2, true));
        assert_eq!(store.bot(&sales).await.unwrap().flow_version, Some(2));
        let active = store.flow_version(&sales, None).await.unwrap();
        assert_eq!(active, v2);
        assert_eq!(store.flow_version(&sales, Some(1)).await.unwrap(), v1);
        assert_eq!(active.document["text"], "¿Qué tal? ✓");

        // Numbering is per bot.
        let other = store
            .create_flow_version(&path("acme", "other"), &new(9), false)
            .await
            .unwrap();
        assert_eq!(other.version, 1);
        assert_eq!(store.list_flow_versions(&sales).await.unwrap().len(), 2);

        let activated = store.activate_flow_version(&sales, 1).await.unwrap();
        assert!(activated.active);
        let listed = store.list_flow_versions(&sales).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|v| (v.version, v.active))
                .collect::<Vec<_>>(),
            [(1, true), (2, false)]
        );
        assert_conflict(
            store.delete_flow_version(&sales, 1).await.unwrap_err(),
            Some("version"),
        );
        assert_eq!(
            store.delete_flow_version(&sales, 2).await.unwrap().version,
            2
        );
        assert_not_found(store.flow_version(&sales, Some(2)).await.unwrap_err());
        assert_not_found(store.activate_flow_version(&sales, 2).await.unwrap_err());
        assert_not_found(store.delete_flow_version(&sales, 7).await.unwrap_err());
        // Numbers are never reused.
        assert_eq!(
            store
                .create_flow_version(&sales, &new(3), false)
                .await
                .unwrap()
                .version,
            3
        );
        // Versions go with their bot.
        store.delete_bot(&sales).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        assert!(store.list_flow_versions(&sales).await.unwrap().is_empty());
    }

    pub async fn concurrent_imports_get_distinct_versions(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for n in 0..6 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let new = NewFlowVersion {
                    format: Format::Json,
                    source: "{}".into(),
                    document: json!({"n": n}),
                };
                store
                    .create_flow_version(&path("acme", "sales"), &new, n % 2 == 0)
                    .await
                    .unwrap()
                    .version
            }));
        }
        let mut versions = Vec::new();
        for task in tasks {
            versions.push(task.await.unwrap());
        }
        versions.sort_unstable();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    }

    fn inbound(bot: &dash_core::Bot, contact: &str, id: Option<&str>, text: &str) -> NewInbound {
        NewInbound {
            bot_id: bot.id,
            tenant_id: bot.tenant_id,
            contact: contact.into(),
            provider: "sandbox".into(),
            provider_message_id: id.map(str::to_owned),
            body: MessageBody {
                text: text.into(),
                ..MessageBody::default()
            },
            received_at: chrono::Utc::now(),
        }
    }

    fn commit(bot: &dash_core::Bot, contact: &str) -> StepCommit {
        StepCommit {
            bot_id: bot.id,
            tenant_id: bot.tenant_id,
            contact: contact.into(),
            contact_name: Some("Ana".into()),
            state: json!({"schema": 1}),
            status: "active",
            flow: Some("f".into()),
            step: Some("s".into()),
            flow_version: Some(1),
            last_message_at: Some(chrono::Utc::now()),
            expected_version: None,
            processed_inbound: None,
            fired_timer: None,
            outbound: Vec::new(),
            timers_add: Vec::new(),
            timers_remove: Vec::new(),
            orders: Vec::new(),
            events: Vec::new(),
            now: chrono::Utc::now(),
        }
    }

    const OWNER: &str = "test-host:1:owner";

    fn lease() -> Lease<'static> {
        Lease {
            owner: OWNER,
            until_ms: chrono::Utc::now().timestamp_millis() + 60_000,
        }
    }

    fn out(text: &str) -> NewOutbound {
        NewOutbound {
            body: MessageBody {
                text: text.into(),
                ..MessageBody::default()
            },
            delay_ms: 0,
        }
    }

    pub async fn pipeline_inbound_is_deduplicated_and_ordered(
        store: Arc<dyn Store>,
        _: Arc<TestDb>,
    ) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        let b = store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        let first = store
            .ingest(&inbound(&b, "+1555", Some("w1"), "one"))
            .await
            .unwrap();
        assert!(!first.duplicate);
        let again = store
            .ingest(&inbound(&b, "+1555", Some("w1"), "one again"))
            .await
            .unwrap();
        assert_eq!(
            again,
            Ingested {
                id: first.id,
                duplicate: true
            }
        );
        store
            .ingest(&inbound(&b, "+1555", None, "two"))
            .await
            .unwrap();
        store
            .ingest(&inbound(&b, "+1666", Some("w9"), "other"))
            .await
            .unwrap();
        let pending: Vec<String> = store
            .unprocessed_for(b.id, "+1555")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body.text)
            .collect();
        assert_eq!(pending, ["one", "two"]);
        assert_eq!(store.unprocessed_inbound().await.unwrap().len(), 3);
        let mut step = commit(&b, "+1555");
        step.processed_inbound = Some(first.id);
        store.commit_step(&step).await.unwrap().unwrap();
        let pending: Vec<String> = store
            .unprocessed_for(b.id, "+1555")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body.text)
            .collect();
        assert_eq!(pending, ["two"]);
        let row = store
            .conversation_row(b.id, "+1555")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.contact_name.as_deref(), Some("Ana"));
        assert!(!store.contact_idle(b.id, "+1555").await.unwrap());
        assert_eq!(
            store.list_conversations(b.id).await.unwrap()[0].status,
            "active"
        );
        assert!(store.reset_conversation(b.id, "+1555").await.unwrap());
        assert!(
            store
                .conversation_row(b.id, "+1555")
                .await
                .unwrap()
                .is_none()
        );
        // The transcript outlives a reset.
        assert_eq!(
            store
                .conversation(b.id, "+1555")
                .await
                .unwrap()
                .unwrap()
                .transcript
                .len(),
            2
        );
    }

    pub async fn pipeline_outbox_keeps_contact_order_and_states(
        store: Arc<dyn Store>,
        _: Arc<TestDb>,
    ) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        let b = store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        let mut step = commit(&b, "+1555");
        step.outbound = vec![out("a1"), out("a2")];
        let ids = store.commit_step(&step).await.unwrap().unwrap();
        let other = store
            .enqueue(
                b.id,
                b.tenant_id,
                "+1666",
                &MessageBody {
                    text: "b1".into(),
                    ..MessageBody::default()
                },
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis() + 1;
        let due: Vec<String> = store
            .due_outbound(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body.text)
            .collect();
        assert_eq!(due, ["a1", "b1"], "a2 waits for a1");
        assert!(
            store
                .claim(ids[0], &lease(), chrono::Utc::now())
                .await
                .unwrap()
        );
        assert!(
            !store
                .claim(ids[0], &lease(), chrono::Utc::now())
                .await
                .unwrap(),
            "claimed twice"
        );
        let due: Vec<String> = store
            .due_outbound(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body.text)
            .collect();
        assert_eq!(due, ["b1"], "a2 waits while a1 is in flight");
        store
            .mark_sent(ids[0], OWNER, "sandbox", "sandbox-x", chrono::Utc::now())
            .await
            .unwrap();
        let due: Vec<String> = store
            .due_outbound(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body.text)
            .collect();
        assert_eq!(due, ["a2", "b1"]);
        // A failed attempt schedules a retry; dead stops.
        assert!(
            store
                .claim(ids[1], &lease(), chrono::Utc::now())
                .await
                .unwrap()
        );
        store
            .mark_failed(
                ids[1],
                OWNER,
                "network",
                Some(now + 60_000),
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.next_outbound_due(now).await.unwrap(),
            Some(now + 60_000)
        );
        let entry = store.queue_entry(ids[1]).await.unwrap();
        assert_eq!(entry.message.state, MessageState::Failed);
        assert_eq!(entry.message.attempts, 1);
        assert_eq!(entry.message.last_error.as_deref(), Some("network"));
        let states: Vec<MessageState> = entry.history.iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            [
                MessageState::Pending,
                MessageState::Processing,
                MessageState::Failed
            ]
        );
        assert!(
            store
                .claim(ids[1], &lease(), chrono::Utc::now())
                .await
                .unwrap()
        );
        store
            .mark_failed(ids[1], OWNER, "gone", None, chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(
            store.queue_entry(ids[1]).await.unwrap().message.state,
            MessageState::Dead
        );
        assert_eq!(
            store
                .requeue(ids[1], chrono::Utc::now())
                .await
                .unwrap()
                .state,
            MessageState::Pending
        );
        assert_conflict(
            store.requeue(ids[0], chrono::Utc::now()).await.unwrap_err(),
            Some("state"),
        );
        assert_eq!(
            store
                .cancel(other.id, chrono::Utc::now())
                .await
                .unwrap()
                .state,
            MessageState::Cancelled
        );
        assert_conflict(
            store
                .cancel(other.id, chrono::Utc::now())
                .await
                .unwrap_err(),
            Some("state"),
        );
        // Delivery reports move a sent message forward only.
        assert!(
            store
                .apply_status(
                    b.id,
                    "sandbox",
                    "sandbox-x",
                    MessageState::Delivered,
                    chrono::Utc::now()
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .apply_status(
                    b.id,
                    "sandbox",
                    "sandbox-x",
                    MessageState::Read,
                    chrono::Utc::now()
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .apply_status(
                    b.id,
                    "sandbox",
                    "sandbox-x",
                    MessageState::Delivered,
                    chrono::Utc::now()
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .apply_status(
                    b.id,
                    "sandbox",
                    "unknown",
                    MessageState::Read,
                    chrono::Utc::now()
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .apply_status(
                    b.id,
                    "twilio",
                    "sandbox-x",
                    MessageState::Read,
                    chrono::Utc::now()
                )
                .await
                .unwrap()
        );
        let read = store.queue_entry(ids[0]).await.unwrap();
        assert_eq!(read.message.state, MessageState::Read);
        let tail: Vec<MessageState> = read.history.iter().rev().take(2).map(|h| h.state).collect();
        assert_eq!(tail, [MessageState::Read, MessageState::Delivered]);
        // A crash mid-send: processing goes back to pending.
        assert!(
            store
                .claim(ids[1], &lease(), chrono::Utc::now())
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .reclaim_leases(true, chrono::Utc::now())
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store.queue_entry(ids[1]).await.unwrap().message.state,
            MessageState::Pending
        );
        // Deferral moves the due time without counting an attempt.
        store.defer(ids[1], now + 5_000).await.unwrap();
        assert!(store.due_outbound(now, 10).await.unwrap().is_empty());
        let query = QueueQuery {
            bot_id: Some(b.id),
            state: Some(MessageState::Pending),
            limit: 10,
        };
        assert_eq!(store.queue(&query).await.unwrap().len(), 1);
        let all = QueueQuery {
            bot_id: None,
            state: None,
            limit: 10,
        };
        assert_eq!(store.queue(&all).await.unwrap().len(), 3);
        assert_not_found(store.queue_entry(uuid::Uuid::new_v4()).await.unwrap_err());
    }

    pub async fn pipeline_timers_and_sandbox(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        let b = store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let mut step = commit(&b, "+1555");
        step.timers_add = vec![
            TimerRow {
                timer_id: 1,
                kind: "Expiry".into(),
                due_ms: now + 60_000,
            },
            TimerRow {
                timer_id: 2,
                kind: "IdleReminder".into(),
                due_ms: now - 10,
            },
        ];
        store.commit_step(&step).await.unwrap().unwrap();
        let due = store.due_timers(now, 10).await.unwrap();
        assert_eq!(
            due,
            [DueTimer {
                bot_id: b.id,
                contact: "+1555".into(),
                timer_id: 2
            }]
        );
        assert_eq!(store.next_timer_due().await.unwrap(), Some(now - 10));
        let mut step = commit(&b, "+1555");
        step.expected_version = Some(1);
        step.timers_remove = vec![2];
        store.commit_step(&step).await.unwrap().unwrap();
        assert!(store.due_timers(now, 10).await.unwrap().is_empty());
        assert_eq!(store.next_timer_due().await.unwrap(), Some(now + 60_000));

        let body = MessageBody {
            text: "hola".into(),
            ..MessageBody::default()
        };
        let first = store
            .sandbox_record("k1", b.id, "+1555", &body, chrono::Utc::now())
            .await
            .unwrap();
        let again = store
            .sandbox_record("k1", b.id, "+1555", &body, chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(first, again);
        let sent = store.sandbox_sent(b.id).await.unwrap();
        assert_eq!(sent.len(), 1, "a retried send is recorded once");
        assert_eq!(sent[0].calls, 2, "and both calls are counted");
    }

    /// Updates of different fields of one record, racing: none is lost (each update
    /// reads and writes the row under its lock).
    pub async fn concurrent_updates_are_not_lost(store: Arc<dyn Store>, _: Arc<TestDb>) {
        for round in 0..8 {
            let slug_name = format!("t{round}");
            store.create_tenant(&tenant(&slug_name)).await.unwrap();
            let rename = {
                let store = store.clone();
                let slug_name = slug_name.clone();
                tokio::spawn(async move {
                    let change = UpdateTenant {
                        name: Some(format!("Renamed {round}")),
                        status: None,
                        api_rate_per_minute: None,
                    };
                    store
                        .update_tenant(&slug(&slug_name), &change)
                        .await
                        .unwrap();
                })
            };
            let suspend = {
                let store = store.clone();
                let slug_name = slug_name.clone();
                tokio::spawn(async move {
                    let change = UpdateTenant {
                        name: None,
                        status: Some(TenantStatus::Suspended),
                        api_rate_per_minute: None,
                    };
                    store
                        .update_tenant(&slug(&slug_name), &change)
                        .await
                        .unwrap();
                })
            };
            rename.await.unwrap();
            suspend.await.unwrap();
            let after = store.tenant(&slug(&slug_name)).await.unwrap();
            assert_eq!(after.name, format!("Renamed {round}"), "round {round}");
            assert_eq!(after.status, TenantStatus::Suspended, "round {round}");
        }
    }

    /// A batch longer than one multi-row statement (256 rows) and not a multiple of it:
    /// every message stored once, a delivery repeated inside the batch answered as the
    /// first one's duplicate, each with its history row, and the same for claims.
    pub async fn batches_past_one_statement_keep_every_row(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let mut batch: Vec<NewInbound> = (0..300)
            .map(|i| inbound(&b, &format!("+{i}"), Some(&format!("w{i}")), "hola"))
            .collect();
        batch.push(inbound(&b, "+7", Some("w7"), "again"));
        let stored = store.ingest_batch(&batch).await.unwrap();
        assert_eq!(stored.len(), 301);
        assert!(stored[..300].iter().all(|s| !s.duplicate));
        assert_eq!(
            stored[300],
            Ingested {
                id: stored[7].id,
                duplicate: true
            }
        );
        let unique: std::collections::HashSet<_> = stored.iter().map(|s| s.id).collect();
        assert_eq!(unique.len(), 300);
        assert_eq!(store.unprocessed_inbound().await.unwrap().len(), 300);

        let mut ids = Vec::new();
        for i in 0..300 {
            ids.push(queued(&store, &b, &format!("+{i}")).await);
        }
        let claims: Vec<(uuid::Uuid, Lease<'_>)> = ids.iter().map(|id| (*id, lease())).collect();
        let taken = store
            .claim_batch(&claims, chrono::Utc::now())
            .await
            .unwrap();
        assert!(taken.iter().all(|t| *t), "every entry claimed");
        for id in [ids[0], ids[255], ids[256], ids[299]] {
            let entry = store.queue_entry(id).await.unwrap();
            assert_eq!(entry.message.state, MessageState::Processing);
            let claims = entry
                .history
                .iter()
                .filter(|h| h.state == MessageState::Processing)
                .count();
            assert_eq!(claims, 1, "{id}: {:?}", entry.history);
        }
    }

    async fn one_bot(store: &Arc<dyn Store>) -> dash_core::Bot {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap()
    }

    async fn queued(store: &Arc<dyn Store>, b: &dash_core::Bot, contact: &str) -> uuid::Uuid {
        let body = MessageBody {
            text: "hola".into(),
            ..MessageBody::default()
        };
        store
            .enqueue(b.id, b.tenant_id, contact, &body, chrono::Utc::now())
            .await
            .unwrap()
            .id
    }

    async fn state_of(store: &Arc<dyn Store>, id: uuid::Uuid) -> MessageState {
        store.queue_entry(id).await.unwrap().message.state
    }

    /// Every outbox transition is conditional on the state (and, once claimed, on the
    /// owner): a cancelled entry cannot be marked sent, a claimed one cannot be cancelled
    /// or retried, and an owner cannot record an entry it does not hold.
    pub async fn outbox_transitions_are_compare_and_set(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let now = chrono::Utc::now();
        let cancelled = queued(&store, &b, "+1").await;
        store.cancel(cancelled, now).await.unwrap();
        assert!(
            !store
                .mark_sent(cancelled, OWNER, "sandbox", "x1", now)
                .await
                .unwrap(),
            "a cancelled message was marked sent"
        );
        assert_eq!(state_of(&store, cancelled).await, MessageState::Cancelled);
        assert!(!store.claim(cancelled, &lease(), now).await.unwrap());

        let claimed = queued(&store, &b, "+2").await;
        assert!(store.claim(claimed, &lease(), now).await.unwrap());
        assert_conflict(store.cancel(claimed, now).await.unwrap_err(), Some("state"));
        assert_conflict(
            store.requeue(claimed, now).await.unwrap_err(),
            Some("state"),
        );
        assert!(
            !store
                .mark_sent(claimed, "someone-else", "sandbox", "x2", now)
                .await
                .unwrap(),
            "another owner recorded an entry it does not hold"
        );
        assert!(
            !store
                .mark_failed(claimed, "someone-else", "boom", None, now)
                .await
                .unwrap()
        );
        assert_eq!(state_of(&store, claimed).await, MessageState::Processing);
        assert!(
            store
                .mark_sent(claimed, OWNER, "sandbox", "x2", now)
                .await
                .unwrap()
        );
        // Sent once: recording it again changes nothing.
        assert!(
            !store
                .mark_sent(claimed, OWNER, "sandbox", "x3", now)
                .await
                .unwrap()
        );
        let entry = store.queue_entry(claimed).await.unwrap();
        assert_eq!(entry.message.provider_message_id.as_deref(), Some("x2"));
        assert_eq!(entry.message.attempts, 1);
    }

    /// An operator's retry racing the dispatcher's claim of the same failed entries:
    /// whatever the interleaving, no entry is claimed and then put back. A retry that
    /// lands after the claim would put an in-flight entry back to `pending`, to be sent a
    /// second time. Each entry ends claimed once more (`processing`), or, on PostgreSQL,
    /// `pending` and not claimed when the claim skipped the row the retry held (the
    /// dispatcher takes it on its next round).
    pub async fn operator_retry_cannot_race_a_claim(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let mut ids = Vec::new();
        for i in 0..40 {
            let id = queued(&store, &b, &format!("+{i}")).await;
            assert!(store.claim(id, &lease(), chrono::Utc::now()).await.unwrap());
            assert!(
                store
                    .mark_failed(id, OWNER, "network", Some(0), chrono::Utc::now())
                    .await
                    .unwrap()
            );
            ids.push(id);
        }
        let mut tasks = Vec::new();
        for id in ids.clone() {
            let claim_store = store.clone();
            tasks.push(tokio::spawn(async move {
                claim_store
                    .claim(id, &lease(), chrono::Utc::now())
                    .await
                    .unwrap();
            }));
            let retry_store = store.clone();
            tasks.push(tokio::spawn(async move {
                // Refused when the claim won: that is the point.
                let _ = retry_store.requeue(id, chrono::Utc::now()).await;
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for id in ids {
            let entry = store.queue_entry(id).await.unwrap();
            let claims = entry
                .history
                .iter()
                .filter(|h| h.state == MessageState::Processing)
                .count();
            // One claim before the race, and one in it unless it skipped the entry.
            match entry.message.state {
                MessageState::Processing => assert_eq!(claims, 2, "{id}: {:?}", entry.history),
                MessageState::Pending if store.backend() == Backend::Postgres => {
                    assert_eq!(claims, 1, "claimed, then put back: {:?}", entry.history);
                }
                other => panic!("{id} ended {other:?}: {:?}", entry.history),
            }
        }
    }

    /// On PostgreSQL a claim skips an entry another transaction holds (another dispatcher
    /// claiming it that instant) instead of waiting for it, and takes it once it is free.
    /// SQLite has one writer at a time: there is nothing to skip, and the claim goes
    /// through.
    pub async fn claims_skip_entries_another_transaction_holds(
        store: Arc<dyn Store>,
        db: Arc<TestDb>,
    ) {
        use sqlx::Connection;
        let b = one_bot(&store).await;
        let id = queued(&store, &b, "+1").await;
        if let TestDb::Postgres { admin_url, name } = &*db {
            let mut other = sqlx::PgConnection::connect(&database_url(admin_url, name))
                .await
                .unwrap();
            let mut held = other.begin().await.unwrap();
            sqlx::query("SELECT id FROM messages WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *held)
                .await
                .unwrap();
            let claimed = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                store.claim(id, &lease(), chrono::Utc::now()),
            )
            .await
            .expect("a claim waited for a row another transaction holds")
            .unwrap();
            assert!(!claimed, "an entry another transaction holds was claimed");
            held.rollback().await.unwrap();
        }
        assert!(store.claim(id, &lease(), chrono::Utc::now()).await.unwrap());
        assert_eq!(state_of(&store, id).await, MessageState::Processing);
    }

    /// A claimed entry whose lease ran out is taken back by the periodic sweep (not only
    /// at start-up), and its former owner can no longer record it.
    pub async fn expired_leases_are_taken_back(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let now = chrono::Utc::now();
        let expired = queued(&store, &b, "+1").await;
        let live = queued(&store, &b, "+2").await;
        let short = Lease {
            owner: OWNER,
            until_ms: now.timestamp_millis() - 1,
        };
        assert!(store.claim(expired, &short, now).await.unwrap());
        assert!(store.claim(live, &lease(), now).await.unwrap());
        assert_eq!(store.reclaim_leases(false, now).await.unwrap(), 1);
        assert_eq!(state_of(&store, expired).await, MessageState::Pending);
        assert_eq!(state_of(&store, live).await, MessageState::Processing);
        assert!(
            !store
                .mark_sent(expired, OWNER, "sandbox", "late", now)
                .await
                .unwrap(),
            "an entry taken back was recorded by its former owner"
        );
        // The contact's outbox moves on: the entry is due again.
        let due = store
            .due_outbound(now.timestamp_millis() + 1, 10)
            .await
            .unwrap();
        assert!(due.iter().any(|d| d.id == expired));
        // Claimed again (a new claim, a new token): the first claim's late outcome is
        // still refused, the new claim's is recorded.
        let again = Lease {
            owner: "test-host:1:owner/second-claim",
            until_ms: now.timestamp_millis() + 60_000,
        };
        assert!(store.claim(expired, &again, now).await.unwrap());
        assert!(
            !store
                .mark_failed(expired, OWNER, "late failure", Some(0), now)
                .await
                .unwrap(),
            "a late outcome of an earlier claim overwrote the current one"
        );
        assert!(
            store
                .mark_sent(expired, again.owner, "sandbox", "second", now)
                .await
                .unwrap()
        );
        // At start-up of the only dashd, every `processing` entry comes back.
        assert_eq!(store.reclaim_leases(true, now).await.unwrap(), 1);
        assert_eq!(state_of(&store, live).await, MessageState::Pending);
    }

    /// A conversation write over a version other than the one read is refused, with
    /// nothing written (no outbox entry, no processed message).
    pub async fn conversation_writes_check_the_version(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let first = store
            .ingest(&inbound(&b, "+1555", Some("m1"), "one"))
            .await
            .unwrap();
        let step = commit(&b, "+1555");
        assert!(store.commit_step(&step).await.unwrap().is_some());
        // A second writer that also saw no conversation loses.
        let mut late = commit(&b, "+1555");
        late.processed_inbound = Some(first.id);
        late.outbound = vec![out("lost")];
        assert!(store.commit_step(&late).await.unwrap().is_none());
        assert_eq!(store.unprocessed_for(b.id, "+1555").await.unwrap().len(), 1);
        assert!(
            store
                .queue(&QueueQuery {
                    bot_id: Some(b.id),
                    state: None,
                    limit: 10
                })
                .await
                .unwrap()
                .is_empty(),
            "a refused step queued a message"
        );
        let version = store
            .conversation_row(b.id, "+1555")
            .await
            .unwrap()
            .unwrap()
            .version;
        let mut stale = commit(&b, "+1555");
        stale.expected_version = Some(version + 7);
        assert!(store.commit_step(&stale).await.unwrap().is_none());
        let mut fresh = commit(&b, "+1555");
        fresh.expected_version = Some(version);
        fresh.processed_inbound = Some(first.id);
        assert!(store.commit_step(&fresh).await.unwrap().is_some());
        assert_eq!(
            store
                .conversation_row(b.id, "+1555")
                .await
                .unwrap()
                .unwrap()
                .version,
            version + 1
        );
        // The message is handled: the same step committed again is refused.
        let mut again = commit(&b, "+1555");
        again.expected_version = Some(version + 1);
        again.processed_inbound = Some(first.id);
        assert!(store.commit_step(&again).await.unwrap().is_none());
    }

    /// Steps committed together: one refused by its guard is undone alone, the others
    /// are written, each answered with its own result.
    pub async fn steps_committed_together_fail_alone(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let a = store
            .ingest(&inbound(&b, "+1555", Some("s1"), "one"))
            .await
            .unwrap();
        let c = store
            .ingest(&inbound(&b, "+1666", Some("s2"), "two"))
            .await
            .unwrap();
        let mut good = commit(&b, "+1555");
        good.processed_inbound = Some(a.id);
        good.outbound = vec![out("first reply")];
        // Claims a conversation version that does not exist: refused after nothing, and
        // its inbound update (had it run) must not survive either.
        let mut stale = commit(&b, "+1666");
        stale.expected_version = Some(41);
        stale.processed_inbound = Some(c.id);
        stale.outbound = vec![out("lost")];
        let mut also_good = commit(&b, "+1777");
        also_good.outbound = vec![out("third reply"), out("and more")];
        let written = store.commit_steps(&[good, stale, also_good]).await.unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(written[0].as_ref().map(Vec::len), Some(1));
        assert_eq!(written[1], None);
        assert_eq!(written[2].as_ref().map(Vec::len), Some(2));
        assert!(
            store
                .unprocessed_for(b.id, "+1555")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.unprocessed_for(b.id, "+1666").await.unwrap().len(), 1);
        let queued = store
            .queue(&QueueQuery {
                bot_id: Some(b.id),
                state: None,
                limit: 10,
            })
            .await
            .unwrap();
        let mut texts: Vec<String> = queued.iter().map(|m| m.body.text.clone()).collect();
        texts.sort();
        assert_eq!(texts, ["and more", "first reply", "third reply"]);
        // The refused one, committed alone on fresh state, goes through.
        let mut retry = commit(&b, "+1666");
        retry.processed_inbound = Some(c.id);
        assert!(store.commit_steps(&[retry]).await.unwrap()[0].is_some());
        assert!(
            store
                .unprocessed_for(b.id, "+1666")
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// A message whose handling fails is retried later, then `failed` with its reason,
    /// and the contact counts as idle again.
    pub async fn failing_inbound_is_retried_then_failed(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let poison = store
            .ingest(&inbound(&b, "+1555", Some("p1"), "poison"))
            .await
            .unwrap();
        let next = store
            .ingest(&inbound(&b, "+1555", Some("p2"), "next"))
            .await
            .unwrap();
        let other = store
            .ingest(&inbound(&b, "+1666", Some("p3"), "other contact"))
            .await
            .unwrap();
        let now = chrono::Utc::now();
        let attempts = |id: uuid::Uuid, contact: &'static str| {
            let store = store.clone();
            async move {
                store
                    .unprocessed_for(b.id, contact)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|m| m.id == id)
                    .map(|m| m.attempts)
            }
        };
        // A start counts an attempt for the message each conversation is at, only.
        assert_eq!(store.count_interrupted_attempts(now).await.unwrap(), 2);
        assert_eq!(attempts(poison.id, "+1555").await, Some(1));
        assert_eq!(attempts(next.id, "+1555").await, Some(0));
        assert_eq!(attempts(other.id, "+1666").await, Some(1));
        // A failed attempt is counted and scheduled again.
        assert!(
            store
                .inbound_failed(
                    poison.id,
                    "flow error",
                    Some(now.timestamp_millis() + 5_000),
                    now
                )
                .await
                .unwrap()
        );
        let pending = store.unprocessed_for(b.id, "+1555").await.unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].attempts, 2);
        assert_eq!(
            pending[0].next_attempt_ms,
            Some(now.timestamp_millis() + 5_000)
        );
        // Postponed for an outage: not counted.
        assert!(
            store
                .inbound_postponed(
                    poison.id,
                    "database unavailable",
                    now.timestamp_millis(),
                    now
                )
                .await
                .unwrap()
        );
        assert_eq!(attempts(poison.id, "+1555").await, Some(2));
        assert_eq!(
            store
                .inbound_backlog()
                .await
                .unwrap()
                .into_iter()
                .find(|(bot, _)| *bot == b.id),
            Some((b.id, 3))
        );
        assert!(
            store
                .inbound_failed(poison.id, "flow error again", None, now)
                .await
                .unwrap()
        );
        let pending = store.unprocessed_for(b.id, "+1555").await.unwrap();
        assert_eq!(
            pending.len(),
            1,
            "the conversation goes on with the next message"
        );
        assert_eq!(pending[0].id, next.id);
        // Failed for good: no more transitions.
        assert!(
            !store
                .inbound_failed(poison.id, "late", None, now)
                .await
                .unwrap()
        );
        let transcript = store
            .conversation(b.id, "+1555")
            .await
            .unwrap()
            .unwrap()
            .transcript;
        assert_eq!(transcript[0].state, MessageState::Failed);
        assert_eq!(transcript[0].attempts, 3);
        assert_eq!(
            transcript[0].last_error.as_deref(),
            Some("flow error again")
        );
        let mut step = commit(&b, "+1555");
        step.processed_inbound = Some(next.id);
        store.commit_step(&step).await.unwrap().unwrap();
        assert!(store.contact_idle(b.id, "+1555").await.unwrap());
    }

    /// A timer whose step fails moves to a later due time (never due again at once),
    /// and can be dropped.
    pub async fn failing_timers_back_off(store: Arc<dyn Store>, _: Arc<TestDb>) {
        let b = one_bot(&store).await;
        let now = chrono::Utc::now().timestamp_millis();
        let mut step = commit(&b, "+1555");
        step.timers_add = vec![TimerRow {
            timer_id: 7,
            kind: "Expiry".into(),
            due_ms: now - 1,
        }];
        store.commit_step(&step).await.unwrap().unwrap();
        assert_eq!(store.due_timers(now, 10).await.unwrap().len(), 1);
        assert_eq!(
            store
                .timer_failed(b.id, "+1555", 7, &|_| Some(now + 2_000))
                .await
                .unwrap(),
            1
        );
        assert!(store.due_timers(now, 10).await.unwrap().is_empty());
        assert_eq!(store.next_timer_due().await.unwrap(), Some(now + 2_000));
        assert!(store.timer_exists(b.id, "+1555", 7).await.unwrap());
        assert_eq!(
            store
                .timer_failed(b.id, "+1555", 7, &|_| None)
                .await
                .unwrap(),
            2
        );
        assert!(!store.timer_exists(b.id, "+1555", 7).await.unwrap());
        // Firing a timer that is gone commits nothing.
        let mut fire = commit(&b, "+1555");
        fire.expected_version = Some(1);
        fire.fired_timer = Some(7);
        assert!(store.commit_step(&fire).await.unwrap().is_none());
    }

    /// Pipeline records of one tenant's bot never show through another's.
    pub async fn pipeline_records_are_isolated_per_bot(store: Arc<dyn Store>, _: Arc<TestDb>) {
        store.create_tenant(&tenant("acme")).await.unwrap();
        store.create_tenant(&tenant("beta")).await.unwrap();
        let a = store
            .create_bot(&slug("acme"), &bot("sales", None))
            .await
            .unwrap();
        let b = store
            .create_bot(&slug("beta"), &bot("sales", None))
            .await
            .unwrap();
        // Same contact, same provider message id, two bots: two messages.
        let in_a = store
            .ingest(&inbound(&a, "+1555", Some("same"), "for acme"))
            .await
            .unwrap();
        let in_b = store
            .ingest(&inbound(&b, "+1555", Some("same"), "for beta"))
            .await
            .unwrap();
        assert!(!in_b.duplicate);
        assert_ne!(in_a.id, in_b.id);
        let mut step = commit(&a, "+1555");
        step.processed_inbound = Some(in_a.id);
        step.outbound = vec![out("acme only")];
        store.commit_step(&step).await.unwrap().unwrap();
        let texts = |d: dash_core::api::ConversationDetail| -> Vec<String> {
            d.transcript.into_iter().map(|m| m.body.text).collect()
        };
        assert_eq!(
            texts(store.conversation(b.id, "+1555").await.unwrap().unwrap()),
            ["for beta"]
        );
        assert_eq!(
            texts(store.conversation(a.id, "+1555").await.unwrap().unwrap()),
            ["for acme", "acme only"]
        );
        assert!(store.list_conversations(b.id).await.unwrap().is_empty());
        assert!(
            store
                .conversation_row(b.id, "+1555")
                .await
                .unwrap()
                .is_none()
        );
        let beta_queue = store
            .queue(&QueueQuery {
                bot_id: Some(b.id),
                state: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert!(beta_queue.is_empty());
        assert_eq!(
            store.unprocessed_for(b.id, "+1555").await.unwrap()[0]
                .body
                .text,
            "for beta"
        );
        assert!(!store.reset_conversation(b.id, "+1555").await.unwrap());
        assert!(
            store
                .conversation_row(a.id, "+1555")
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// Generates one test per case for a backend; `$attr` decides whether they are ignored.
macro_rules! suite {
    ($backend:ident, $open:expr, $attr:meta) => {
        mod $backend {
            use super::*;
            suite!(@cases $open, $attr;
                tenants_round_trip, duplicate_slug_conflicts, missing_records_are_not_found,
                bots_round_trip, bot_names_are_unique_per_tenant, phones_are_unique_across_bots,
                tenants_are_isolated, tenant_with_bots_needs_force, data_survives_reopening,
                health_and_schema, concurrent_updates_are_not_lost, flow_versions_round_trip,
                concurrent_imports_get_distinct_versions, pipeline_inbound_is_deduplicated_and_ordered,
                pipeline_outbox_keeps_contact_order_and_states, pipeline_timers_and_sandbox,
                outbox_transitions_are_compare_and_set, operator_retry_cannot_race_a_claim,
                claims_skip_entries_another_transaction_holds,
                batches_past_one_statement_keep_every_row,
                expired_leases_are_taken_back, conversation_writes_check_the_version,
                steps_committed_together_fail_alone,
                failing_inbound_is_retried_then_failed, failing_timers_back_off,
                pipeline_records_are_isolated_per_bot, providers_contacts_and_attempts,
                sessions_keep_state_qr_phone_and_history,
                users_sessions_and_keys_stay_in_their_tenant,
                idempotent_sends_queue_once_per_tenant_and_key,
                business_data_stays_in_its_tenant,
                the_event_stream_merges_its_records_per_tenant);

            #[tokio::test]
            #[$attr]
            async fn start_up_refuses_an_unmigrated_database() {
                let db = $open;
                let err = db.open(Some(MigrationPolicy::Require)).await.unwrap_err();
                assert!(err.to_string().contains("dashd migrate"), "{err}");
                db.drop_database().await;
            }
        }
    };
    (@cases $open:expr, $attr:meta; $($case:ident),*) => {
        $(
            #[tokio::test]
            #[$attr]
            async fn $case() {
                with_store($open, cases::$case).await;
            }
        )*
    };
}

suite!(sqlite, TestDb::sqlite().await, cfg_attr(any(), ignore));

suite!(
    postgres,
    TestDb::postgres().await,
    cfg_attr(
        not(dashd_pg_tests),
        ignore = "set DASHD_TEST_DATABASE_URL to run the PostgreSQL suite"
    )
);

/// Under CI the PostgreSQL suite is not optional.
#[test]
fn postgres_suite_is_enabled_under_ci() {
    let under_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if under_ci && !cfg!(dashd_pg_tests) {
        panic!("CI=true but DASHD_TEST_DATABASE_URL was not set when the tests were built");
    }
}

#[test]
fn database_url_swaps_the_name() {
    assert_eq!(
        database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        database_url("postgres://h?sslmode=disable", "x"),
        "postgres://h/x?sslmode=disable"
    );
}
