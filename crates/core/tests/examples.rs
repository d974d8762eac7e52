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
