//! Compile-fail tests for a build without the `http` feature: `#[http]`
//! is one clear error. Run with
//! `cargo test -p shimeji --no-default-features --features amqp --test compile_fail_no_http`;
//! regenerate the expected output with `TRYBUILD=overwrite` in front.
#![cfg(not(feature = "http"))]

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui_no_http/*.rs");
}
