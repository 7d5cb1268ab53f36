//! Reading what a run of the `hsm-kms` command line printed, for the CLI tests.

use std::process::Output;

use serde_json::Value;

/// Its standard output (UTF-8).
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Its standard error.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        stderr(output)
    );
    stdout(output)
}

/// Asserts success and parses stdout as JSON.
pub fn json(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}
