//! Loud skips: an end-to-end test whose server or tool is not installed passes without running,
//! and says so in plain `cargo test` output. Under `GPULSE_CI=1` a missing tool fails instead.
//!
//! libtest captures what `print!`/`eprint!` write in a test (shown only for failures or under
//! `--nocapture`), so a skip note written with them is invisible. [`not_installed`] writes
//! straight to the process's stderr through `std::io::Write`, which libtest does not capture:
//!
//! ```text
//! SKIPPED (not installed): real_servers::llamacpp_through_its_states — GPULSE_LLAMA_SERVER is unset or missing; run `eval "$(.ci/llama-server.sh)"`, see docs/development.md
//! ```

use std::io::Write;

/// Where the optional prerequisites are described.
const SEE: &str = "docs/development.md";

/// `program` on PATH (a file of that name in one of its directories), for the tests that
/// skip without a tool.
pub fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Whether CI requires every end-to-end prerequisite (`.ci/run` sets `GPULSE_CI=1`).
pub fn ci() -> bool {
    std::env::var("GPULSE_CI").as_deref() == Ok("1")
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "(unknown test)".to_owned(),
    }
}

/// Writes one line to stderr, bypassing libtest's capture. It starts with a newline: libtest
/// may have written half a `test NAME ... ok` line to stdout, and the note must start a line
/// of its own (`grep ^SKIPPED` finds them all).
fn say(line: &str) {
    let mut stderr = std::io::stderr().lock();
    // A failed write to stderr leaves nothing better to do; the test goes on.
    let _ = writeln!(stderr, "\n{line}");
    let _ = stderr.flush();
}

/// Reports that the calling test skips because `missing` is not installed; `how` says how to
/// install it. Panics instead under `GPULSE_CI=1`, so CI cannot pass by skipping.
pub fn not_installed(missing: &str, how: &str) {
    let test = test_name();
    assert!(
        !ci(),
        "{test}: {missing} but GPULSE_CI=1 requires it ({how}; .ci/run installs it, see {SEE})"
    );
    say(&format!(
        "SKIPPED (not installed): {test} — {missing}; {how}, see {SEE}"
    ));
}

/// Reports that the calling test skips because it was not asked for (`enable` says how), also
/// under `GPULSE_CI=1`: for checks CI cannot run, such as the real-GPU test.
pub fn not_enabled(what: &str, enable: &str) {
    say(&format!(
        "SKIPPED (not enabled): {} — {what}; {enable}, see {SEE}",
        test_name()
    ));
}
