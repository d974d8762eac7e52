//! Marks the PostgreSQL test suite as runnable when `DASHD_TEST_DATABASE_URL` is set, so
//! that without it those tests show as "ignored", never as passed.

fn main() {
    println!("cargo::rerun-if-env-changed=DASHD_TEST_DATABASE_URL");
    println!("cargo::rustc-check-cfg=cfg(dashd_pg_tests)");
    if std::env::var_os("DASHD_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=dashd_pg_tests");
    }
}
