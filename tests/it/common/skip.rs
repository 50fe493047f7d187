//! A test that needs what the machine lacks (a PostgreSQL server, Chromium) skips, and says so
//! on the terminal; with `TEST_NO_SKIP=1`, as CI sets it, it fails instead, so nothing is
//! skipped quietly where everything should run.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;

/// The variable that turns every skip into a failure.
pub const NO_SKIP: &str = "TEST_NO_SKIP";

fn skips_are_failures() -> bool {
    std::env::var_os(NO_SKIP).is_some_and(|value| !value.is_empty() && value != "0")
}

/// Skips `what` because `why`: says so on stderr the first time for `what` (the harness hides
/// a passing test's `println!`, so this writes to stderr itself), or panics when skips are
/// failures.
pub fn skip(what: &str, why: &str) {
    assert!(
        !skips_are_failures(),
        "{what} cannot run here: {why}; {NO_SKIP} is set, so this is a failure, not a skip"
    );
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let first = SAID
        .lock()
        .map(|mut said| said.get_or_insert_with(HashSet::new).insert(what.to_owned()))
        .unwrap_or(true);
    if first {
        let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {why}");
    }
}
