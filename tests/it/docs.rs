//! The docs kept honest: `docs/configuration.md` shows `gpulse config example` verbatim, every
//! relative link in README.md and `docs/*.md` (anchors included) points at something that
//! exists, and the metric references name every family `/metrics` serves (`docs/metrics.md` the
//! native ones, `docs/dcgm.md` the dcgm-exporter ones).
//!
//! `GPULSE_BLESS=1 cargo test --test it docs` rewrites the example block from the binary's
//! `gpulse::config::EXAMPLE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every `docs/*.md`, as (path relative to the root, text).
fn markdown_files() -> Vec<(String, String)> {
    let mut files = vec![("README.md".to_owned(), read(&root().join("README.md")))];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        files.push((rel, read(&path)));
    }
    files
}

const CONFIGURATION: &str = "docs/configuration.md";
const EXAMPLE_HEADING: &str = "## The example configuration";

/// The byte range of the example block's contents (between "```toml\n" and the closing fence)
/// in `docs/configuration.md`.
fn example_block(text: &str) -> std::ops::Range<usize> {
    let heading = text
        .find(EXAMPLE_HEADING)
        .unwrap_or_else(|| panic!("{CONFIGURATION} has no `{EXAMPLE_HEADING}` section"));
    let open = "```toml\n";
    let start = text[heading..]
        .find(open)
        .map(|i| heading + i + open.len())
        .unwrap_or_else(|| panic!("{CONFIGURATION}: no ```toml block after `{EXAMPLE_HEADING}`"));
    let end = text[start..]
        .find("\n```\n")
        .map(|i| start + i + 1)
        .unwrap_or_else(|| panic!("{CONFIGURATION}: the ```toml block is not closed"));
    start..end
}

#[test]
fn configuration_md_shows_the_example_config_verbatim() {
    let path = root().join(CONFIGURATION);
    let text = read(&path);
    let block = example_block(&text);
    let example = gpulse::config::EXAMPLE;
    if text[block.clone()] == *example {
        return;
    }
    if std::env::var("GPULSE_BLESS").as_deref() == Ok("1") {
        let mut blessed = text.clone();
        blessed.replace_range(block, example);
        std::fs::write(&path, blessed).unwrap();
        return;
    }
    panic!(
        "{CONFIGURATION}'s example config differs from `gpulse config example` \
         (packaging/gpulse.example.toml).\n\
         Regenerate it with: GPULSE_BLESS=1 cargo test --test it docs\n\
         The block should read:\n```toml\n{example}```"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The text with fenced code blocks blanked out (their lines kept, so line numbers hold).
fn without_code_blocks(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                ""
            } else if fenced {
                ""
            } else {
                line
            }
        })
        .collect()
}

/// Every anchor a Markdown file defines: its headings' slugs (a repeated heading gets `-1`,
/// `-2`, ... as on GitHub).
pub(crate) fn anchors(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    without_code_blocks(text)
        .into_iter()
        .filter_map(|line| {
            let heading = line.trim_start_matches('#');
            (line.starts_with('#') && heading.starts_with(' ')).then(|| slug(heading))
        })
        .map(|s| {
            let n = seen.entry(s.clone()).or_default();
            *n += 1;
            if *n == 1 {
                s
            } else {
                format!("{s}-{}", *n - 1)
            }
        })
        .collect()
}

/// The targets of inline links `[text](target)` outside code, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in without_code_blocks(text).into_iter().enumerate() {
        // Inline code spans hold examples, not links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            out.push((n + 1, target.to_owned()));
            rest = &rest[end..];
        }
    }
    out
}

/// Generated from the metric catalog (`GPULSE_BLESS=1 cargo test --test it metrics_doc`).
const METRICS_MD: &str = "docs/metrics.md";

#[test]
fn relative_links_point_at_existing_files_and_anchors() {
    let mut broken = Vec::new();
    for (file, text) in markdown_files() {
        let dir = Path::new(&file).parent().unwrap_or(Path::new(""));
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                PathBuf::from(&file)
            } else {
                normalize(&dir.join(path))
            };
            let full = root().join(&resolved);
            if !full.exists() {
                broken.push(format!(
                    "{file}:{line}: {target} ({} is missing)",
                    resolved.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor
                && full.extension().is_some_and(|e| e == "md")
                && !anchors(&read(&full)).iter().any(|a| a == anchor)
            {
                broken.push(format!(
                    "{file}:{line}: {target} (no heading with anchor #{anchor} in {})",
                    resolved.display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `a/../b` to `b`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                assert!(out.pop(), "{} leaves the repository", path.display());
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_link_checker_sees_links_anchors_and_code() {
    let text = "# Top\n## `gpulse wrap`\n## https, tokens, errors\n## Top\n\
                See [a](docs/a.md#x) and `[b](c.md)`.\n```\n[d](e.md)\n```\n[f](<g>) [h](#top-1)\n";
    assert_eq!(
        anchors(text),
        ["top", "gpulse-wrap", "https-tokens-errors", "top-1"]
    );
    let targets: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets, ["docs/a.md#x", "<g>", "#top-1"]);
}

/// The `# TYPE` names in the golden files: the native families and, from the dcgm golden,
/// every DCGM family the fixed snapshot has.
fn exported_families() -> Vec<String> {
    [
        "tests/data/metrics.golden",
        "tests/data/metrics_dcgm.golden",
    ]
    .map(|p| read(&root().join(p)))
    .concat()
    .lines()
    .filter_map(|l| l.strip_prefix("# TYPE "))
    .filter_map(|l| l.split_whitespace().next())
    .map(str::to_owned)
    .collect()
}

/// The families of `families` that `doc` does not name in backticks.
fn unnamed<'a>(doc: &str, families: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let text = read(&root().join(doc));
    families
        .map(String::as_str)
        .filter(|name| !text.contains(&format!("`{name}`")))
        .collect()
}

#[test]
fn metrics_md_lists_every_native_metric() {
    let families = exported_families();
    let missing = unnamed(
        METRICS_MD,
        families.iter().filter(|n| !n.starts_with("DCGM_")),
    );
    assert!(
        missing.is_empty(),
        "metrics missing from {METRICS_MD}: {missing:?}"
    );
}

#[test]
fn dcgm_md_lists_every_dcgm_metric() {
    let families = exported_families();
    let dcgm: Vec<&String> = families.iter().filter(|n| n.starts_with("DCGM_")).collect();
    assert!(!dcgm.is_empty(), "the dcgm golden has no DCGM family");
    let missing = unnamed("docs/dcgm.md", dcgm.into_iter());
    assert!(
        missing.is_empty(),
        "DCGM metrics missing from docs/dcgm.md: {missing:?}"
    );
}
