//! The man pages (`packaging/man/`) and shell completions (`packaging/completions/`) that the
//! .deb installs: generated from the binary's clap definitions (`gpulse::cli::command`), so a
//! new flag that is not in them fails here.
//!
//! `GPULSE_BLESS=1 cargo test --test it manpages` rewrites both directories; review the diff.

use std::collections::BTreeMap;
use std::path::Path;

use clap_complete::Shell;

use crate::tidy::root;

const MAN_DIR: &str = "packaging/man";
const COMPLETIONS_DIR: &str = "packaging/completions";

/// The shells whose completions are shipped, and where Debian looks for them (the .deb's
/// assets in Cargo.toml must match).
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Every file in `dir` by name, with its bytes.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// Compares `generated` with the committed `rel` directory, or rewrites it under
/// `GPULSE_BLESS=1`.
fn check_or_bless(generated: &Path, rel: &str) {
    let committed_dir = root().join(rel);
    let fresh = files_in(generated);
    assert!(!fresh.is_empty(), "nothing generated for {rel}");
    if std::env::var("GPULSE_BLESS").as_deref() == Ok("1") {
        let _ = std::fs::remove_dir_all(&committed_dir);
        std::fs::create_dir_all(&committed_dir).unwrap();
        for (name, bytes) in &fresh {
            std::fs::write(committed_dir.join(name), bytes).unwrap();
        }
        return;
    }
    let committed = files_in(&committed_dir);
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&fresh),
        "{rel} holds other files than the CLI generates; regenerate with \
         GPULSE_BLESS=1 cargo test --test it manpages"
    );
    for (name, bytes) in &fresh {
        assert!(
            committed[name] == *bytes,
            "{rel}/{name} is out of date with the CLI; regenerate with \
             GPULSE_BLESS=1 cargo test --test it manpages and review the diff"
        );
    }
}

#[test]
fn man_pages_match_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    // One page for gpulse and one per subcommand (gpulse-run.1, gpulse-config-check.1, ...).
    clap_mangen::generate_to(gpulse::cli::command(), dir.path()).unwrap();
    let pages = files_in(dir.path());
    let main = String::from_utf8(pages["gpulse.1"].clone()).unwrap();
    assert!(main.starts_with(".ie \\n(.g .ds Aq"), "not roff:\n{main}");
    assert!(
        main.contains("gpulse\\-scan(1)"),
        "subcommands are not listed:\n{main}"
    );
    assert!(pages.contains_key("gpulse-wrap.1"), "{:?}", pages.keys());
    check_or_bless(dir.path(), MAN_DIR);
}

#[test]
fn shell_completions_match_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    for shell in SHELLS {
        let mut command = gpulse::cli::command();
        clap_complete::generate_to(shell, &mut command, "gpulse", dir.path()).unwrap();
    }
    let files = files_in(dir.path());
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        ["_gpulse", "gpulse.bash", "gpulse.fish"],
    );
    let bash = String::from_utf8(files["gpulse.bash"].clone()).unwrap();
    assert!(bash.contains("--nvml-lib"), "flags missing:\n{bash}");
    check_or_bless(dir.path(), COMPLETIONS_DIR);
}
