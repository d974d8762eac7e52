//! The example documents under `examples/flows/` validate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use dash_core::flow::{Bundle, Capabilities};

#[test]
fn examples_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flows");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(errors) = Bundle::from_text(&text, 1, Capabilities::CURRENT) {
            panic!("{}: {errors:#?}", path.display());
        }
        count += 1;
    }
    assert!(count >= 3);
}

#[test]
fn canonical_export_round_trips() {
    use dash_core::flow::{Document, Format};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flows");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = Document::parse(&text, Format::Toml).unwrap();
        let toml = doc
            .to_toml()
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(
            Document::parse(&toml, Format::Toml).unwrap(),
            doc,
            "{}",
            path.display()
        );
        let json = serde_json::to_string_pretty(&doc).unwrap();
        assert_eq!(
            Document::parse(&json, Format::Json).unwrap(),
            doc,
            "{}",
            path.display()
        );
    }
}
