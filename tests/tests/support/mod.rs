//! What the end-to-end test files share beyond `fulmar_tests` (which is std only and
//! cannot use the test-only client crates): a test file declares `mod support;`.

pub(crate) mod mqtt5;
