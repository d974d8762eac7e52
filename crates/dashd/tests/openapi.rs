//! The OpenAPI document: every route of the table is in it with its path parameters,
//! body schema and security, and it passes an OpenAPI 3.1 validator
//! (openapi-spec-validator, installed by scripts/pytools).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::HashSet;

use dashd::gateway::api::openapi::document;
use dashd::gateway::api::{Access, route_table};
use serde_json::Value;

#[test]
fn every_route_is_described() {
    let doc: Value = serde_json::from_str(&document().to_json().unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut ids = HashSet::new();
    for route in route_table() {
        let method = route.method.as_str().to_lowercase();
        let operation = &doc["paths"][route.path][&method];
        assert!(operation.is_object(), "{method} {} is missing", route.path);
        assert!(ids.insert(operation["operationId"].as_str().unwrap().to_owned()));
        let params: Vec<&str> = operation["parameters"]
            .as_array()
            .map(|list| list.iter().map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        for part in route.path.split('/') {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                assert!(params.contains(&name), "{} lacks {name}", route.path);
            }
        }
        match route.body {
            Some(body) => {
                let reference =
                    operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .unwrap();
                let name = reference.rsplit('/').next().unwrap();
                assert_eq!(name, body.name());
                assert!(schemas.contains_key(name), "{name}");
            }
            None => assert!(operation["requestBody"].is_null(), "{}", route.path),
        }
        let open = operation["security"].as_array().is_some_and(Vec::is_empty);
        assert_eq!(open, route.access == Access::Open, "{}", route.path);
    }
}

#[test]
fn the_document_passes_an_openapi_validator() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if python.is_err() {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "CI=true needs python3 to validate the OpenAPI document"
        );
        eprintln!("notice: python3 not found: the OpenAPI validator did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document().to_json().unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pytools");
    let output = std::process::Command::new(script)
        .arg("openapi-spec-validator")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
