//! End-to-end: a real dashd started in-process (port 0, temporary data directory) driven
//! by the real `dashctl` binary, as a sysadmin would drive it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::{Path, PathBuf};

use common::{Env, config_in, run_ctl};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_lifecycle() {
    let env = Env::start().await;
    let created = env
        .ctl(&["tenant", "create", "acme", "--name", "Acme", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["name"], "Acme");
    assert_eq!(created["status"], "active");
    env.ctl(&["tenant", "create", "beta"]).await.ok();

    let list = env
        .ctl(&["tenant", "list", "--output", "json"])
        .await
        .ok()
        .json();
    let slugs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme", "beta"]);
    let table = env.ctl(&["tenant", "list"]).await.ok().stdout;
    assert!(table.starts_with("SLUG"), "{table}");
    assert!(table.contains("Acme"), "{table}");

    let by_id = env
        .ctl(&[
            "tenant",
            "show",
            created["id"].as_str().unwrap(),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(by_id, created);

    let updated = env
        .ctl(&[
            "tenant",
            "update",
            "acme",
            "--name",
            "Acme Corp",
            "--status",
            "suspended",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(updated["name"], "Acme Corp");
    assert_eq!(updated["status"], "suspended");
    env.ctl(&["tenant", "update", "acme"])
        .await
        .fails(2, "nothing to change");
    env.ctl(&["tenant", "update", "acme", "--status", "gone"])
        .await
        .fails(2, "tenant status");

    env.ctl(&["tenant", "delete", "beta", "--yes"]).await.ok();
    env.ctl(&["tenant", "show", "beta"])
        .await
        .fails(4, "tenant beta not found");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_lifecycle() {
    let env = Env::start().await;
    env.ctl(&["tenant", "create", "acme", "--name", "Acme"])
        .await
        .ok();
    let created = env
        .ctl(&[
            "bot",
            "create",
            "acme/sales",
            "--phone",
            "+5491123456789",
            "--timezone",
            "America/Argentina/Buenos_Aires",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["name"], "sales");
    assert_eq!(created["phone"], "+5491123456789");
    assert_eq!(created["timezone"], "America/Argentina/Buenos_Aires");
    assert_eq!(
        created["settings"],
        serde_json::json!({"chain": ["sandbox"]})
    );

    let list = env
        .ctl(&["bot", "list", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0], created);
    let table = env
        .ctl(&["bot", "list", "--tenant", "acme"])
        .await
        .ok()
        .stdout;
    assert!(
        table.contains("acme/sales") && table.contains("+5491123456789"),
        "{table}"
    );

    let id = created["id"].as_str().unwrap();
    assert_eq!(
        env.ctl(&["bot", "show", id, "-o", "json"])
            .await
            .ok()
            .json(),
        created
    );

    let updated = env
        .ctl(&[
            "bot",
            "update",
            "acme/sales",
            "--status",
            "paused",
            "--no-phone",
            "--settings",
            r#"{"chain":["sandbox"]}"#,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(updated["status"], "paused");
    assert_eq!(updated["phone"], Value::Null);
    assert_eq!(updated["settings"]["chain"][0], "sandbox");
    let renamed = env
        .ctl(&["bot", "update", id, "--name", "ventas", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(renamed["name"], "ventas");

    env.ctl(&["bot", "delete", "acme/ventas"])
        .await
        .fails(2, "--yes");
    env.ctl(&["bot", "show", "acme/ventas"]).await.ok();
    env.ctl(&["bot", "delete", "acme/ventas", "--yes"])
        .await
        .ok();
    env.ctl(&["bot", "show", "acme/ventas"])
        .await
        .fails(4, "bot acme/ventas not found");
    let empty = env.ctl(&["bot", "list"]).await.ok();
    assert!(
        empty.stdout.is_empty() && empty.stderr.contains("No bots"),
        "{}",
        empty.stderr
    );
    assert_eq!(
        env.ctl(&["bot", "list", "-o", "json"]).await.ok().json(),
        serde_json::json!([])
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_clear_errors() {
    let env = Env::start().await;
    env.ctl(&["tenant", "create", "acme"]).await.ok();
    env.ctl(&["tenant", "create", "acme"])
        .await
        .fails(5, "tenant acme already exists");
    env.ctl(&["bot", "create", "acme/sales", "--phone", "+5491123456789"])
        .await
        .ok();
    env.ctl(&["bot", "create", "acme/sales"])
        .await
        .fails(5, "bot acme/sales already exists");
    env.ctl(&[
        "bot",
        "create",
        "acme/other",
        "--phone",
        "+54 9 11 2345-6789",
    ])
    .await
    .fails(5, "phone +5491123456789 is already used");

    // A tenant with bots is kept unless forced, and nothing is asked in vain.
    env.ctl(&["tenant", "delete", "acme", "--yes"])
        .await
        .fails(5, "still has 1 bot");
    env.ctl(&["bot", "show", "acme/sales"]).await.ok();
    env.ctl(&["tenant", "delete", "acme", "--force"])
        .await
        .fails(2, "--yes");
    let deleted = env
        .ctl(&["tenant", "delete", "acme", "--force", "--yes", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(deleted["bots_deleted"], 1);
    env.ctl(&["bot", "list", "-o", "json"]).await.ok();
    let json_error = env
        .ctl(&["bot", "show", "acme/sales", "-o", "json"])
        .await
        .fails(4, "not_found");
    let body: Value = serde_json::from_str(json_error.stderr.trim()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_names_the_field_and_rule() {
    let env = Env::start().await;
    env.ctl(&["tenant", "create", "acme"]).await.ok();
    env.ctl(&["tenant", "create", "Acme"]).await.fails(
        2,
        "slug: \"Acme\" is not a valid slug: use 2 to 40 characters",
    );
    env.ctl(&["tenant", "create", "a"]).await.fails(2, "slug");
    env.ctl(&["tenant", "create", "ok-slug", "--name", "  "])
        .await
        .fails(2, "name: must be 1 to 200");
    env.ctl(&["bot", "create", "acme/sales", "--phone", "5491123456789"])
        .await
        .fails(2, "phone: \"5491123456789\" is not an E.164 phone number");
    env.ctl(&["bot", "create", "acme/sales", "--timezone", "Mars/Olympus"])
        .await
        .fails(2, "timezone: \"Mars/Olympus\" is not an IANA time zone");
    env.ctl(&["bot", "create", "acme/Sales"])
        .await
        .fails(2, "bot");
    env.ctl(&["bot", "create", "acme"])
        .await
        .fails(2, "TENANT/BOT");
    env.ctl(&["bot", "create", "acme/sales", "--settings", "[1]"])
        .await
        .fails(2, "settings: must be a JSON object");
    env.ctl(&["bot", "create", "acme/sales", "--settings", "{"])
        .await
        .fails(2, "settings: not valid JSON");
    env.ctl(&["bot", "create", "ghost/sales"])
        .await
        .fails(4, "tenant ghost not found");
    // Nothing was created by the failed attempts.
    assert_eq!(
        env.ctl(&["bot", "list", "-o", "json"]).await.ok().json(),
        serde_json::json!([])
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_socket_is_found_without_flags() {
    let env = Env::start().await;
    let status = run_ctl(env.dir.path(), None, &["status", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(status["version"], dash_core::VERSION);
    assert_eq!(status["database"]["backend"], "sqlite");
    let table = run_ctl(env.dir.path(), None, &["status"]).await.ok().stdout;
    assert!(table.contains("admin API v1"), "{table}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_daemon_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_ctl(dir.path(), None, &["tenant", "list"]).await;
    let run = run.fails(3, "dashd is not running");
    assert!(
        run.stderr.contains("./dashd-data/dashd.sock"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Start it with `dashd`"),
        "{}",
        run.stderr
    );

    let explicit = dir.path().join("nowhere.sock");
    run_ctl(dir.path(), Some(&explicit), &["status"])
        .await
        .fails(3, "nowhere.sock");

    // A socket file left behind by a daemon that died.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    run_ctl(dir.path(), Some(&stale), &["status"])
        .await
        .fails(3, "left over from a daemon that stopped");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "").unwrap();
    run_ctl(dir.path(), Some(&file), &["status"])
        .await
        .fails(3, "is not a socket");
    // An empty DASHCTL_SOCKET means "not set".
    run_ctl(dir.path(), Some(Path::new("")), &["status"])
        .await
        .fails(3, "./dashd-data/dashd.sock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_is_refused_whatever_its_socket() {
    let env = Env::start().await;
    let mut config = config_in(env.dir.path());
    config.admin.socket = Some(env.dir.path().join("other.sock"));
    let err = dashd::start(config).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("already running with database"),
        "{err:#}"
    );
    env.ctl(&["status"]).await.ok();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_characters_in_the_data_dir_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("we?ird#dir%20");
    std::fs::create_dir(&odd).unwrap();
    let daemon = dashd::start(config_in(&odd)).await.unwrap();
    run_ctl(&odd, None, &["tenant", "create", "acme"])
        .await
        .ok();
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_keep_the_field_and_usage_errors_are_json_too() {
    let env = Env::start().await;
    env.ctl(&["tenant", "create", "acme"]).await.ok();
    let run = env
        .ctl(&[
            "-o",
            "json",
            "bot",
            "create",
            "acme/sales",
            "--phone",
            "12345",
        ])
        .await
        .fails(2, "E.164");
    let body: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(body["error"]["field"], "phone");
    let run = env
        .ctl(&["-o", "json", "bot", "show", "acme/x"])
        .await
        .fails(2, "usage");
    let body: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(body["error"]["code"], "usage");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let env = Env::start().await;
    let err = dashd::start(config_in(env.dir.path())).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("another dashd is already running"),
        "{err:#}"
    );
    // The first one is unharmed.
    env.ctl(&["status"]).await.ok();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_the_socket_and_data_persists() {
    let env = Env::start().await;
    env.ctl(&["tenant", "create", "acme"]).await.ok();
    let socket = env.socket();
    let Env { daemon, dir: tmp } = env;
    daemon.unwrap().shutdown().await.unwrap();
    assert!(!socket.exists());

    let again = dashd::start(config_in(tmp.path())).await.unwrap();
    let env = Env {
        daemon: Some(again),
        dir: tmp,
    };
    let list = env.ctl(&["tenant", "list", "-o", "json"]).await.ok().json();
    assert_eq!(list[0]["slug"], "acme");
    env.stop().await;
}

#[tokio::test]
async fn completions_and_man_pages_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let run = run_ctl(dir.path(), None, &["completions", shell])
            .await
            .ok();
        assert!(run.stdout.contains("tenant"), "{shell}: {}", run.stdout);
    }
    run_ctl(dir.path(), None, &["completions", "tcsh"])
        .await
        .fails(2, "invalid value");

    let man = dir.path().join("man1");
    run_ctl(dir.path(), None, &["man", man.to_str().unwrap()])
        .await
        .ok();
    let page = std::fs::read_to_string(man.join("dashctl.1")).unwrap();
    assert!(page.contains(".TH dashctl"), "{page}");
    assert!(man.join("dashctl-tenant-create.1").exists());
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

#[tokio::test]
async fn flow_validate_rejects_each_class_of_error() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/invalid_flows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let run = run_ctl(
            dir.path(),
            None,
            &["flow", "validate", file.to_str().unwrap()],
        )
        .await;
        let run = run.fails(2, expected);
        assert!(
            run.stderr.contains(&file.display().to_string()),
            "{}",
            run.stderr
        );
    }
    // The examples are valid; JSON output lists each file.
    let examples = [
        repo("examples/flows/shop.toml"),
        repo("examples/flows/support.toml"),
        repo("examples/flows/out_of_hours.toml"),
    ];
    let mut args = vec!["flow", "validate", "-o", "json"];
    args.extend(examples.iter().map(String::as_str));
    let report = run_ctl(dir.path(), None, &args).await.ok().json();
    assert_eq!(report.as_array().unwrap().len(), 3);
    assert!(
        report
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["valid"] == true)
    );
    run_ctl(dir.path(), None, &["flow", "validate", "/nonexistent.toml"])
        .await
        .fails(2, "cannot read /nonexistent.toml");
}

async fn show(env: &Env, version: &str) -> Value {
    env.ctl(&["flow", "show", "acme/ventas", version, "-o", "json"])
        .await
        .ok()
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_versions_lifecycle() {
    let env = Env::start().await;
    env.ctl(&["tenant", "create", "acme"]).await.ok();
    env.ctl(&[
        "bot",
        "create",
        "acme/ventas",
        "--timezone",
        "America/Argentina/Buenos_Aires",
    ])
    .await
    .ok();
    env.ctl(&["flow", "show", "acme/ventas"])
        .await
        .fails(4, "active flow version of bot acme/ventas not found");

    let shop = repo("examples/flows/shop.toml");
    let v1 = env
        .ctl(&[
            "flow",
            "import",
            "acme/ventas",
            &shop,
            "--activate",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["active"], true);
    assert_eq!(v1["flows"][0]["id"], "bienvenida");
    let v2 = env
        .ctl(&[
            "flow",
            "import",
            "acme/ventas",
            &repo("examples/flows/support.toml"),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        (v2["version"].as_u64(), v2["active"].as_bool()),
        (Some(2), Some(false))
    );

    // A bad document is refused with every error, located in the file, and stores nothing.
    let bad = repo("crates/core/tests/invalid_flows/unknown_variable.toml");
    let run = env
        .ctl(&["flow", "import", "acme/ventas", &bad])
        .await
        .fails(2, "the flow document has 1 error");
    assert!(
        run.stderr
            .contains(&format!("{bad}: flow \"main\", step \"bye\", field text")),
        "{}",
        run.stderr
    );
    let list = env
        .ctl(&["flow", "list", "acme/ventas", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = env.ctl(&["flow", "list", "acme/ventas"]).await.ok().stdout;
    assert!(table.contains("bienvenida, catalogo"), "{table}");

    // Export gives back the imported text; the canonical form imports to the same document.
    let exported = env
        .ctl(&["flow", "export", "acme/ventas", "1"])
        .await
        .ok()
        .stdout;
    assert_eq!(
        exported.trim_end(),
        std::fs::read_to_string(&shop).unwrap().trim_end()
    );
    let canonical = env
        .ctl(&["flow", "export", "acme/ventas", "--canonical"])
        .await
        .ok()
        .stdout;
    let file = env.dir.path().join("canonical.toml");
    std::fs::write(&file, &canonical).unwrap();
    let v3 = env
        .ctl(&[
            "flow",
            "import",
            "acme/ventas",
            file.to_str().unwrap(),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        show(&env, "3").await["document"],
        show(&env, "1").await["document"]
    );
    assert_eq!(v3["version"], 3);
    let json_export = env
        .ctl(&[
            "flow",
            "export",
            "acme/ventas",
            "1",
            "--canonical",
            "--format",
            "json",
        ])
        .await
        .ok()
        .stdout;
    let json_file = env.dir.path().join("canonical.json");
    std::fs::write(&json_file, &json_export).unwrap();
    env.ctl(&["flow", "import", "acme/ventas", json_file.to_str().unwrap()])
        .await
        .ok();
    assert_eq!(show(&env, "4").await["format"], "json");

    // Activation moves; the active version cannot be deleted; others can.
    env.ctl(&["flow", "activate", "acme/ventas", "2"])
        .await
        .ok();
    assert_eq!(show(&env, "active").await["version"], 2);
    let bot = env
        .ctl(&["bot", "show", "acme/ventas", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(bot["flow_version"], 2);
    env.ctl(&["flow", "delete", "acme/ventas", "2", "--yes"])
        .await
        .fails(5, "is the active version");
    env.ctl(&["flow", "delete", "acme/ventas", "1"])
        .await
        .fails(2, "--yes");
    env.ctl(&["flow", "delete", "acme/ventas", "1", "--yes"])
        .await
        .ok();
    env.ctl(&["flow", "show", "acme/ventas", "1"])
        .await
        .fails(4, "flow version 1 of bot acme/ventas not found");
    env.ctl(&["flow", "activate", "acme/ventas", "1"])
        .await
        .fails(4, "not found");
    env.ctl(&["flow", "show", "acme/ventas", "first"])
        .await
        .fails(2, "not a flow version");
    // Numbers keep growing after a deletion.
    let v5 = env
        .ctl(&["flow", "import", "acme/ventas", &shop, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(v5["version"], 5);
    // Versions belong to their bot.
    env.ctl(&["bot", "create", "acme/otro"]).await.ok();
    assert_eq!(
        env.ctl(&["flow", "list", "acme/otro", "-o", "json"])
            .await
            .ok()
            .json(),
        serde_json::json!([])
    );
    env.stop().await;
}
