//! Layout rules checked as tests: `lib.rs`'s crate map names every top-level module, no import
//! circles between modules (top level, and siblings inside one folder), no oversized files.
//!
//! The import graph is read from the source text: every `crate::a::b` path (also inside
//! `use crate::{..}` groups) and every `super::x` path outside comments and `#[cfg(test)]`
//! code is an edge from the file's module to the module it names. Modules are compared at two
//! levels: the top level (`config`, `export`, …) and one level below (`export::prometheus`,
//! `collect::probe`), where a folder's own `mod.rs` (which declares and re-exports its
//! children) is left out, so "a child uses its parent's shared item" is not a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::tidy::{root, rust_files};

/// The module path of a source file: `src/export/prometheus/mod.rs` → `["export", "prometheus"]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .skip(1) // "src"
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_owned();
        if stem != "mod" && stem != "lib" && stem != "main" {
            parts.push(stem);
        }
    }
    parts
}

/// The text that is compiled into the library, without comments and test-only code.
fn code_only(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the next item: a `mod tests { .. }` block or a `mod tests;` line.
            let mut depth = 0i32;
            let mut opened = false;
            for next in lines.by_ref() {
                depth += next.matches('{').count() as i32 - next.matches('}').count() as i32;
                opened |= next.contains('{');
                if (opened && depth <= 0) || (!opened && next.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is rare in paths we care about; keep it simple.
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads `a::b::{c, d::e}` at the start of `s` and pushes every full path it names.
fn read_paths(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut rest = s;
    loop {
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            read_paths(group[start..i].trim_start(), &path, out);
                            return;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            read_paths(group[start..i].trim_start(), &path, out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            break;
        }
        rest = &rest[ident.len()..];
        path.push(ident);
        match rest.strip_prefix("::") {
            Some(r) => rest = r.trim_start(),
            None => break,
        }
    }
    out.push(path);
}

/// Every module path a file refers to, resolved against the set of known modules.
fn references(
    module: &[String],
    text: &str,
    known: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let code = code_only(text);
    let mut paths = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| is_ident(c)) {
            continue; // e.g. `$crate::` or `foo_crate::`
        }
        read_paths(&code[i + "crate::".len()..], &[], &mut paths);
    }
    // `super::x` from a module file means the parent of the file's module.
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with(|c: char| is_ident(c) || c == ':') {
            continue;
        }
        let parent = &module[..module.len().saturating_sub(1)];
        read_paths(&code[i + "super::".len()..], parent, &mut paths);
    }
    paths
        .into_iter()
        .filter_map(|p| {
            (1..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|prefix| known.contains(prefix))
        })
        .collect()
}

struct Crate {
    /// Module path → source text.
    files: BTreeMap<Vec<String>, String>,
}

impl Crate {
    fn read() -> Self {
        let mut paths = Vec::new();
        rust_files(&root().join("src"), &mut paths);
        let mut files = BTreeMap::new();
        for path in paths {
            let rel = path.strip_prefix(root()).unwrap().to_path_buf();
            let text = std::fs::read_to_string(&path).unwrap();
            // Test-only files (`foo/tests.rs`) are not part of the library's graph.
            if rel.file_name().is_some_and(|n| n == "tests.rs") || rel.ends_with("main.rs") {
                continue;
            }
            files.insert(module_of(&rel), text);
        }
        Self { files }
    }

    /// Edges between modules cut to `depth` path segments, for modules under `within`.
    fn edges(&self, depth: usize) -> BTreeSet<(Vec<String>, Vec<String>)> {
        let known: BTreeSet<Vec<String>> = self.files.keys().cloned().collect();
        let mut edges = BTreeSet::new();
        for (module, text) in &self.files {
            if module.len() < depth {
                continue; // a folder's mod.rs at this level: declares and re-exports children
            }
            let from = module[..depth].to_vec();
            for target in references(module, text, &known) {
                if target.len() < depth {
                    continue; // uses a parent's shared item
                }
                let to = target[..depth].to_vec();
                // At depth 2, only siblings inside one folder; depth 1 covers the rest.
                if to != from && (depth == 1 || to[..depth - 1] == from[..depth - 1]) {
                    edges.insert((from.clone(), to));
                }
            }
        }
        edges
    }
}

/// The circles of a directed graph, each as its sorted set of members (Tarjan's SCCs > 1).
fn circles(edges: &BTreeSet<(Vec<String>, Vec<String>)>) -> Vec<Vec<String>> {
    let mut nodes: BTreeSet<&Vec<String>> = BTreeSet::new();
    for (a, b) in edges {
        nodes.insert(a);
        nodes.insert(b);
    }
    // Reachability by repeated DFS is plenty for a few dozen modules.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for (a, b) in edges {
                if *a == n && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let members: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[*n].contains(**m) && reachable[**m].contains(*n))
            .map(|m| m.join("::"))
            .collect();
        if members.len() > 1 {
            out.insert(members);
        }
    }
    out.into_iter().collect()
}

#[test]
fn no_import_circles_between_modules() {
    let krate = Crate::read();
    for depth in [1, 2] {
        let found = circles(&krate.edges(depth));
        assert!(
            found.is_empty(),
            "import circles at depth {depth} (each line: modules that reach each other):\n{}",
            found
                .iter()
                .map(|c| c.join(" ↔ "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    // The guard above must be able to fail: a → b → c → a is one circle; d hangs off it.
    let e = |a: &str, b: &str| (vec![a.to_owned()], vec![b.to_owned()]);
    let edges = [e("a", "b"), e("b", "c"), e("c", "a"), e("c", "d")]
        .into_iter()
        .collect();
    assert_eq!(circles(&edges), vec![vec!["a", "b", "c"]]);
    let mut paths = Vec::new();
    read_paths("config::{self, Config}, model::X};", &[], &mut paths);
    assert_eq!(paths[0], ["config", "self"]);
    assert_eq!(paths[1], ["config", "Config"]);
}

#[test]
fn lib_rs_crate_map_names_every_top_level_module() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    // The crate map: one `//! * `name` …` bullet per module.
    let mapped: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! * `"))
        .filter_map(|l| l.split('`').next())
        .map(|name| name.trim_end_matches('/').to_owned())
        .collect();
    assert_eq!(
        declared, mapped,
        "src/lib.rs: the crate map (//! * `module` lines) and the `pub mod` lines differ"
    );
    for module in &declared {
        let file = root().join("src").join(format!("{module}.rs"));
        let dir = root().join("src").join(module).join("mod.rs");
        assert!(
            file.exists() || dir.exists(),
            "lib.rs declares {module}, but neither src/{module}.rs nor src/{module}/mod.rs exists"
        );
    }
}

#[test]
fn no_source_file_is_oversized() {
    // Long files are where unrelated things pile up; split by ownership instead. Test-only
    // files and the fake NVML (C) are not counted.
    const MAX_LINES: usize = 800;
    let mut paths = Vec::new();
    rust_files(&root().join("src"), &mut paths);
    let mut over: Vec<String> = paths
        .iter()
        .filter(|p| !p.ends_with("tests.rs"))
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > MAX_LINES)
                .then(|| format!("{} ({n} lines)", p.strip_prefix(root()).unwrap().display()))
        })
        .collect();
    over.sort();
    assert!(over.is_empty(), "files over {MAX_LINES} lines: {over:?}");
}
