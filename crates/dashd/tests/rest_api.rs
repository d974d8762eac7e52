//! The REST API against a real dashd: tenant isolation and permissions, generated from
//! the router's own route table (a route added later is covered, or this test fails),
//! tokens and their refusal, refresh rotation, logins limits, request budgets, headers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::rest::{self, Answer, PASSWORD, Rest, TEST_JWT_SECRET};
use dash_core::access::{Role, Scope};
use dashd::gateway::api::{Access, ApiRoute, route_table};
use serde_json::{Value, json};

/// The route's path with its parameters filled: with `own` ids, or made-up ones.
fn fill(route: &ApiRoute, world: &rest::TenantWorld, made_up: bool) -> String {
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut path = route.path.to_owned();
    while let Some(start) = path.find('{') {
        let end = path[start..].find('}').unwrap() + start;
        let name = &path[start + 1..end];
        let value = match (name, made_up) {
            ("version", _) => "1".to_owned(),
            ("contact", _) => "+5491100000001".to_owned(),
            ("provider", _) => "meta".to_owned(),
            (_, true) => unknown.clone(),
            ("bot", false) => world.bot_id.clone(),
            ("user", false) => world.owner_id.clone(),
            ("key", false) => world.key_id.clone(),
            ("product", false) => world.product_id.clone(),
            ("customer", false) => world.customer_id.clone(),
            ("seller", false) => world.seller_id.clone(),
            ("order", false) => world.order_id.clone(),
            (other, _) => panic!(
                "{} {} has a parameter {{{other}}} this test does not know: say here which of tenant A's resources it names",
                route.method, route.path
            ),
        };
        path.replace_range(start..=end, &value);
    }
    path
}

fn body_for(route: &ApiRoute) -> Option<Value> {
    match route.method.as_str() {
        "POST" | "PUT" | "PATCH" => Some(json!({})),
        _ => None,
    }
}

fn guarded(route: &ApiRoute) -> bool {
    route.access != Access::Open
}

#[tokio::test]
async fn another_tenants_records_are_not_found_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |_| {}).await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    let a = rest::tenant(&admin, &api, "tenant-a").await;
    let b = rest::tenant(&admin, &api, "tenant-b").await;
    let table = route_table();
    assert!(table.len() > 20, "{}", table.len());
    let mut checked = 0;
    for route in table.iter().filter(|r| guarded(r)) {
        let own = fill(route, &a, false);
        let made_up = fill(route, &a, true);
        for (who, credential) in [("B's owner", &b.owner), ("B's key", &b.key)] {
            let answer = api
                .call(
                    route.method.as_str(),
                    &own,
                    Some(credential),
                    body_for(route),
                )
                .await;
            let what = format!("{} {own} as {who}", route.method);
            assert!(answer.status < 500, "{what}: {answer:?}");
            if own == route.path {
                // No resource in the path: whatever comes back names nothing of A's.
                let text = answer.body.to_string();
                for secret in a.secrets() {
                    assert!(!text.contains(&secret), "{what} shows {secret}: {text}");
                }
                continue;
            }
            // A's record is answered exactly as a record that does not exist.
            let absent = api
                .call(
                    route.method.as_str(),
                    &made_up,
                    Some(credential),
                    body_for(route),
                )
                .await;
            assert_eq!(
                (answer.status, answer.code()),
                (absent.status, absent.code()),
                "{what}: {answer:?} vs {absent:?}"
            );
            let key_cannot = who == "B's key"
                && matches!(route.access, Access::Needs(scope) if !scope.grantable_to_keys());
            if key_cannot {
                assert_eq!(answer.status, 403, "{what}: {answer:?}");
            } else {
                assert_eq!(answer.status, 404, "{what}: {answer:?}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
    // A's own owner and a platform admin do reach A's bot; nobody else did.
    let own = api
        .call(
            "GET",
            &format!("/api/v1/bots/{}", a.bot_id),
            Some(&a.owner),
            None,
        )
        .await;
    assert_eq!(own.status, 200, "{own:?}");
    let root = rest::platform_admin(&admin, &api).await;
    let seen = api
        .call(
            "GET",
            &format!("/api/v1/bots/{}", a.bot_id),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(seen.status, 200, "{seen:?}");
    // Lists hold the caller's records only.
    let listed = api.call("GET", "/api/v1/bots", Some(&b.owner), None).await;
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bot| bot["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b.bot_id.as_str()]);
    // The published interface is open to read; it names no tenant's data.
    let document = api.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(document.status, 200);
    assert_eq!(document.body["openapi"], "3.1.0");
    let page = api.call("GET", "/api/docs", None, None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_role_and_scope_meets_the_permission_table() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |_| {}).await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    let a = rest::tenant(&admin, &api, "tenant-a").await;
    // One key per scope, to check each scope alone.
    let mut keys = Vec::new();
    for scope in Scope::ALL.iter().filter(|s| s.grantable_to_keys()) {
        let key = admin
            .call(
                "POST",
                "/v1/keys",
                json!({"tenant": "tenant-a", "name": scope.as_str(), "scopes": [scope]}),
            )
            .await;
        keys.push((*scope, key["key"].as_str().unwrap().to_owned()));
    }
    let root = rest::platform_admin(&admin, &api).await;
    let roles = [
        (Role::Admin, root),
        (Role::Owner, a.owner.clone()),
        (Role::Agent, a.agent.clone()),
        (Role::Viewer, a.viewer.clone()),
    ];
    let mut cases = 0;
    for route in route_table() {
        let Access::Needs(needed) = route.access else {
            continue;
        };
        // Made-up ids: a permitted caller reaches the handler (404 or a body error), a
        // refused one stops at 403; nothing is changed either way.
        let path = fill(&route, &a, true);
        let callers = roles
            .iter()
            .map(|(role, token)| (role.to_string(), role.grants(needed), token.clone()))
            .chain(
                keys.iter()
                    .map(|(scope, key)| (format!("key {scope}"), *scope == needed, key.clone())),
            );
        for (who, allowed, credential) in callers {
            let answer: Answer = api
                .call(
                    route.method.as_str(),
                    &path,
                    Some(&credential),
                    body_for(&route),
                )
                .await;
            let what = format!("{} {} as {who}", route.method, route.path);
            if allowed {
                assert!(
                    ![401, 403].contains(&answer.status) && answer.status < 500,
                    "{what} should pass: {answer:?}"
                );
            } else {
                assert_eq!(answer.status, 403, "{what} should be refused: {answer:?}");
                assert_eq!(answer.code(), "forbidden", "{what}");
            }
            cases += 1;
        }
    }
    assert!(cases > 200, "{cases}");
    daemon.shutdown().await.unwrap();
}

/// A token signed with `secret`, with the given header and claims.
fn forge(header: Value, claims: Value, secret: &[u8]) -> String {
    use base64::Engine as _;
    let encode = |value: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string().as_bytes())
    };
    let signing_input = format!("{}.{}", encode(&header), encode(&claims));
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        dashd::adapter::signature::hmac_sha256(secret, signing_input.as_bytes()),
    );
    format!("{signing_input}.{signature}")
}

#[tokio::test]
async fn bad_tokens_are_refused_and_refresh_tokens_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |_| {}).await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    let a = rest::tenant(&admin, &api, "tenant-a").await;
    let login = api.login("agent@tenant-a.example.com", PASSWORD).await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let me = |token: String| {
        let api = &api;
        async move { api.call("GET", "/api/v1/me", Some(&token), None).await }
    };
    assert_eq!(me(access.clone()).await.status, 200);

    // No credential, garbage, and every flipped byte position class.
    let none = api.call("GET", "/api/v1/me", None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    assert_eq!(me("not a token".into()).await.status, 401);
    let parts: Vec<&str> = access.split('.').collect();
    for (part, _) in parts.iter().enumerate() {
        let mut pieces: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
        let bytes = flip_one(&pieces[part]);
        pieces[part] = bytes;
        let tampered = pieces.join(".");
        assert_eq!(me(tampered).await.status, 401, "part {part}");
    }

    // Claims as dashd writes them, re-signed by a forger.
    let claims: Value = {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    let secret = TEST_JWT_SECRET.as_bytes();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    assert_eq!(
        me(forge(hs256.clone(), claims.clone(), secret))
            .await
            .status,
        200
    );
    let mut expired = claims.clone();
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 5);
    assert_eq!(me(forge(hs256.clone(), expired, secret)).await.status, 401);
    assert_eq!(
        me(forge(
            hs256.clone(),
            claims.clone(),
            b"somebody else's key, 32 bytes or more"
        ))
        .await
        .status,
        401
    );
    let mut no_issuer = claims.clone();
    no_issuer.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        me(forge(hs256.clone(), no_issuer, secret)).await.status,
        401
    );
    // alg none: no signature at all.
    let unsigned = {
        let token = forge(json!({"alg": "none", "typ": "JWT"}), claims.clone(), secret);
        let cut = token.rfind('.').unwrap();
        format!("{}.", &token[..cut])
    };
    assert_eq!(me(unsigned).await.status, 401);
    // RS256 and HS512 headers over an HMAC signature with the real key.
    for alg in ["RS256", "HS512", "ES256"] {
        let token = forge(json!({"alg": alg, "typ": "JWT"}), claims.clone(), secret);
        assert_eq!(me(token).await.status, 401, "{alg}");
    }
    // Another tenant's claim written into a token is still refused: the session decides.
    let mut moved = claims.clone();
    moved["tenant"] = json!(uuid::Uuid::now_v7());
    moved["role"] = json!("owner");
    let forged_role = me(forge(hs256.clone(), moved, secret)).await;
    assert_eq!(forged_role.status, 200);
    assert_eq!(forged_role.body["user"]["role"], "agent");

    // Refresh: a new pair; the old refresh token works once only, and reusing it ends
    // the whole session, including access tokens already handed out.
    let trade = |token: String| {
        let api = &api;
        async move {
            api.call(
                "POST",
                "/api/auth/refresh",
                None,
                Some(json!({"refresh_token": token})),
            )
            .await
        }
    };
    let second = trade(refresh.clone()).await;
    assert_eq!(second.status, 200, "{second:?}");
    let second_access = second.body["access_token"].as_str().unwrap().to_owned();
    let second_refresh = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, refresh);
    assert_eq!(me(second_access.clone()).await.status, 200);
    let reused = trade(refresh.clone()).await;
    assert_eq!(reused.status, 401, "{reused:?}");
    assert_eq!(me(second_access).await.status, 401);
    assert_eq!(me(access.clone()).await.status, 401);
    assert_eq!(trade(second_refresh).await.status, 401);
    assert_eq!(trade("dsr_made-up".into()).await.status, 401);

    // Logout revokes the session of its refresh token.
    let login = api.login("viewer@tenant-a.example.com", PASSWORD).await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(token.clone()).await.status, 200);
    let out = api
        .call(
            "POST",
            "/api/auth/logout",
            None,
            Some(json!({"refresh_token": login["refresh_token"]})),
        )
        .await;
    assert_eq!(out.status, 204, "{out:?}");
    assert_eq!(me(token).await.status, 401);

    // A disabled user's sessions end; a revoked or expired key stops at once.
    let owner_before = me(a.owner.clone()).await;
    assert_eq!(owner_before.status, 200);
    admin
        .call(
            "PATCH",
            "/v1/users/viewer@tenant-a.example.com",
            json!({"status": "disabled"}),
        )
        .await;
    let refused = api
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "viewer@tenant-a.example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(me(a.key.clone()).await.status, 200);
    admin
        .call("DELETE", &format!("/v1/keys/{}", a.key_id), Value::Null)
        .await;
    assert_eq!(me(a.key.clone()).await.status, 401);
    let mut wrong_secret = a.key.clone();
    wrong_secret.pop();
    wrong_secret.push('x');
    assert_eq!(me(wrong_secret).await.status, 401);
    daemon.shutdown().await.unwrap();
}

/// Changes one character of a base64url text (keeping it base64url).
fn flip_one(text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn the_sixth_login_attempt_is_refused_the_same_for_unknown_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |config| {
        // The test plays a proxy, so that each attempt can come from its own address.
        config.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    rest::tenant(&admin, &api, "tenant-a").await;
    let attempt = |from: String, email: &'static str, password: &'static str| {
        let api = &api;
        async move {
            api.call_from(
                Some(&from),
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await
        }
    };
    let unknown = attempt(
        "192.0.2.1".into(),
        "nobody@tenant-a.example.com",
        "Wrong-Password-1",
    )
    .await;
    let wrong = attempt(
        "192.0.2.2".into(),
        "agent@tenant-a.example.com",
        "Wrong-Password-1",
    )
    .await;
    assert_eq!((unknown.status, wrong.status), (401, 401));
    assert_eq!(
        unknown.body, wrong.body,
        "the answers must not tell the two apart"
    );
    for n in 0..4 {
        let answer = attempt(
            format!("192.0.2.{}", 10 + n),
            "agent@tenant-a.example.com",
            "Wrong-Password-1",
        )
        .await;
        assert_eq!(answer.status, 401);
    }
    // Five failures for the account, each from its own address: the sixth attempt is
    // refused, even with the right password and from a new address.
    let sixth = attempt("192.0.2.99".into(), "agent@tenant-a.example.com", PASSWORD).await;
    assert_eq!(sixth.status, 429, "{sixth:?}");
    assert_eq!(sixth.code(), "rate_limited");
    let retry: u64 = sixth.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    // Five failures from one address, on five accounts: the address waits, for any
    // account; another address does not.
    for n in 0..5 {
        let email: &'static str = [
            "a@x.example",
            "b@x.example",
            "c@x.example",
            "d@x.example",
            "e@x.example",
        ][n];
        assert_eq!(
            attempt("198.51.100.7".into(), email, "Wrong-Password-1")
                .await
                .status,
            401
        );
    }
    assert_eq!(
        attempt(
            "198.51.100.7".into(),
            "owner@tenant-a.example.com",
            PASSWORD
        )
        .await
        .status,
        429
    );
    assert_eq!(
        attempt(
            "198.51.100.8".into(),
            "owner@tenant-a.example.com",
            PASSWORD
        )
        .await
        .status,
        200
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_tenant_has_its_own_request_budget_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |config| {
        config.api.rate_per_minute = 5;
        config.api.cors_origins = vec!["https://panel.example.com".into()];
        config.api.behind_tls = true;
    })
    .await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    let a = rest::tenant_without_data(&admin, &api, "tenant-a").await;
    let b = rest::tenant_without_data(&admin, &api, "tenant-b").await;
    for remaining in (0..5).rev() {
        let answer = api.call("GET", "/api/v1/bots", Some(&a.key), None).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["ratelimit-policy"], "\"tenant\";q=5;w=60");
        let rate = answer.headers["ratelimit"].to_str().unwrap();
        assert!(
            rate.starts_with(&format!("\"tenant\";r={remaining};t=")),
            "{rate}"
        );
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
        assert_eq!(answer.headers["referrer-policy"], "no-referrer");
        assert!(
            answer.headers["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );
    }
    // The owner's token draws on the same tenant budget as its key.
    let over = api.call("GET", "/api/v1/bots", Some(&a.owner), None).await;
    assert_eq!(over.status, 429, "{over:?}");
    assert_eq!(over.code(), "rate_limited");
    assert!(over.headers.contains_key("retry-after"));
    // Another tenant is not affected.
    assert_eq!(
        api.call("GET", "/api/v1/bots", Some(&b.key), None)
            .await
            .status,
        200
    );

    // A suspended tenant's users and keys can do nothing.
    admin
        .call(
            "PATCH",
            "/v1/tenants/tenant-a",
            json!({"status": "suspended"}),
        )
        .await;
    let suspended = api.call("GET", "/api/v1/me", Some(&a.agent), None).await;
    assert_eq!(suspended.status, 403, "{suspended:?}");
    assert_eq!(
        api.call("GET", "/api/v1/me", Some(&a.key), None)
            .await
            .status,
        403
    );

    // CORS: the configured origin only.
    let preflight = |origin: &'static str| {
        let api = &api;
        async move {
            api.client
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{}/api/v1/bots", api.base),
                )
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization")
                .send()
                .await
                .unwrap()
        }
    };
    let allowed = preflight("https://panel.example.com").await;
    assert_eq!(allowed.status(), 204);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://panel.example.com"
    );
    let refused = preflight("https://evil.example.net").await;
    assert_eq!(refused.status(), 403);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_agent_takes_answers_and_resumes_a_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |_| {}).await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    let a = rest::tenant_without_data(&admin, &api, "tenant-a").await;
    let customer = "+5491100000001";
    let base = format!("/api/v1/bots/{}/conversations", a.bot_id);
    let path = format!("{base}/{customer}");
    admin.say("tenant-a", "shop", customer, "hola").await;
    assert_eq!(replies(&api, &path, &a.agent, 1).await.0, 1);
    let listed = api
        .call(
            "GET",
            &format!("{base}?contact=%2B54911"),
            Some(&a.viewer),
            None,
        )
        .await;
    assert_eq!(listed.body["data"][0]["contact"], customer, "{listed:?}");

    // The agent takes it: the bot stays silent.
    let taken = api
        .call(
            "POST",
            &format!("{base}/{customer}/take"),
            Some(&a.agent),
            None,
        )
        .await;
    assert_eq!(taken.status, 200, "{taken:?}");
    let handoff = api
        .call(
            "GET",
            &format!("{base}?status=handoff"),
            Some(&a.agent),
            None,
        )
        .await;
    assert_eq!(
        handoff.body["data"].as_array().unwrap().len(),
        1,
        "{handoff:?}"
    );
    admin
        .say("tenant-a", "shop", customer, "are you there?")
        .await;
    // Handled (not merely stored) before the agent answers, so that a reply from the bot
    // would come first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body = api.call("GET", &path, Some(&a.agent), None).await.body;
        let handled = body["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "in" && m["state"] == "processed")
            .count();
        if handled == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The agent answers from the API.
    let sent = api
        .call(
            "POST",
            &format!("{base}/{customer}/messages"),
            Some(&a.agent),
            Some(json!({"text": "Hi, Lucía here"})),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let (out, body) = replies(&api, &path, &a.agent, 2).await;
    assert_eq!(out, 2, "{body}");
    let texts: Vec<&str> = body["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "out")
        .map(|m| m["body"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["hola", "Hi, Lucía here"],
        "the bot said nothing in between"
    );

    // Resumed, the bot answers again; a second resume has nothing to resume.
    let resumed = api
        .call(
            "POST",
            &format!("{base}/{customer}/resume"),
            Some(&a.agent),
            None,
        )
        .await;
    assert_eq!(resumed.status, 200, "{resumed:?}");
    let again = api
        .call(
            "POST",
            &format!("{base}/{customer}/resume"),
            Some(&a.agent),
            None,
        )
        .await;
    assert_eq!(again.status, 409);
    admin.say("tenant-a", "shop", customer, "back").await;
    assert_eq!(replies(&api, &path, &a.agent, 3).await.0, 3);

    // The tenant's stream tells the story.
    let events = api
        .call("GET", "/api/v1/events?after=0", Some(&a.viewer), None)
        .await;
    let text = events.body.as_str().unwrap();
    assert!(text.contains("event: handoff.taken"), "{text}");
    assert!(text.contains("event: handoff.resumed"), "{text}");
    daemon.shutdown().await.unwrap();
}

/// Waits until a conversation's transcript holds `want` messages from the bot (10 s at
/// most); how many it holds, and the conversation.
async fn replies(api: &Rest, path: &str, token: &str, want: usize) -> (usize, Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = api.call("GET", path, Some(token), None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let out = answer.body["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "out")
            .count();
        if out >= want || std::time::Instant::now() > deadline {
            return (out, answer.body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn self_service_sign_up_opens_only_when_the_operator_says() {
    let dir = tempfile::tempdir().unwrap();
    let closed = rest::daemon(dir.path(), |_| {}).await;
    let api = Rest::new(closed.http_addr);
    let body =
        json!({"tenant": "panaderia", "email": "eva@panaderia.example", "password": PASSWORD});
    let refused = api
        .call("POST", "/api/auth/register", None, Some(body.clone()))
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    closed.shutdown().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let open = rest::daemon(dir.path(), |config| config.api.self_signup = true).await;
    let api = Rest::new(open.http_addr);
    let made = api
        .call("POST", "/api/auth/register", None, Some(body.clone()))
        .await;
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.body["user"]["role"], "owner");
    assert_eq!(made.body["user"]["tenant"], "panaderia");
    let token = made.body["access_token"].as_str().unwrap();
    let bot = api
        .call(
            "POST",
            "/api/v1/bots",
            Some(token),
            Some(json!({"name": "ventas"})),
        )
        .await;
    assert_eq!(bot.status, 201, "{bot:?}");
    // The slug is taken now; a weak password is refused before anything is made.
    let again = api
        .call("POST", "/api/auth/register", None, Some(body))
        .await;
    assert_eq!(again.status, 409, "{again:?}");
    let weak = api
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"tenant": "kiosco", "email": "kiosco@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(weak.status, 422, "{weak:?}");
    let ghost = api
        .call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "kiosco@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(ghost.status, 401);
    open.shutdown().await.unwrap();
}

#[tokio::test]
async fn provider_secrets_are_write_only_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = rest::daemon(dir.path(), |_| {}).await;
    let admin = common::Admin::new(dir.path());
    let api = Rest::new(daemon.http_addr);
    let a = rest::tenant_without_data(&admin, &api, "tenant-a").await;
    let path = format!("/api/v1/bots/{}/providers/meta", a.bot_id);
    let set = api
        .call(
            "PUT",
            &path,
            Some(&a.owner),
            Some(json!({"settings": {"phone_number_id": "106540352242922"},
                        "secrets": {"access_token": "EAAG-very-secret", "app_secret": "app-secret-value"}})),
        )
        .await;
    assert_eq!(set.status, 200, "{set:?}");
    for answer in [
        set,
        api.call("GET", &path, Some(&a.viewer), None).await,
        api.call(
            "GET",
            &format!("/api/v1/bots/{}/providers", a.bot_id),
            Some(&a.viewer),
            None,
        )
        .await,
    ] {
        let text = answer.body.to_string();
        assert!(text.contains("106540352242922"), "{text}");
        assert!(
            !text.contains("EAAG-very-secret") && !text.contains("app-secret-value"),
            "{text}"
        );
    }
    // A secret given as a setting is refused, and so is an agent.
    let misplaced = api
        .call(
            "PUT",
            &path,
            Some(&a.owner),
            Some(json!({"settings": {"access_token": "x"}})),
        )
        .await;
    assert_eq!(misplaced.status, 422, "{misplaced:?}");
    let agent = api
        .call("PUT", &path, Some(&a.agent), Some(json!({"settings": {}})))
        .await;
    assert_eq!(agent.status, 403);
    let chain = api
        .call(
            "PUT",
            &format!("/api/v1/bots/{}/chain", a.bot_id),
            Some(&a.owner),
            Some(json!({"chain": ["meta", "sandbox"]})),
        )
        .await;
    assert_eq!(chain.status, 200, "{chain:?}");
    daemon.shutdown().await.unwrap();
}
