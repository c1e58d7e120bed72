//! Compile-fail tests: the macros' diagnostics for common mistakes.
//!
//! Regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p shimeji --test compile_fail`.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
