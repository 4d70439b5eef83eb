//! House rules checked as tests: module docs on every file, no nvml-wrapper, axum, hyper or
//! rustls outside their modules, and the README quick start in step with `.ci/run`. The docs'
//! own checks (example config, links, metric references) are in `docs.rs`.

use std::path::{Path, PathBuf};

pub(crate) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(under: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&root().join(under), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root()).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for dir in ["src", "tests", "benches"] {
        for (path, text) in sources(dir) {
            if !text.starts_with("//!") {
                missing.push(path);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}

#[test]
fn only_collect_gpu_imports_nvml_and_only_export_imports_http() {
    for (path, text) in sources("src") {
        if text.contains("nvml_wrapper") {
            assert!(
                path.starts_with("src/collect/gpu"),
                "{path} imports nvml-wrapper"
            );
        }
        if text.contains("sysinfo::") {
            assert_eq!(path, "src/collect/host.rs", "{path} imports sysinfo");
        }
        for http in [
            "axum",
            "tower_http",
            "prometheus_client",
            "serde_json",
            "hyper",
            "hyper_util",
            "rustls",
            "tokio_rustls",
            "rustls_pki_types",
            "subtle",
        ] {
            // The probe collector parses inference servers' JSON answers (model lists,
            // streamed tokens): serde_json there is a client-side parser, not serving.
            // Config validation checks a probe's JSON request body at start.
            let parses_probe_json = http == "serde_json"
                && (path.starts_with("src/collect/probe") || path == "src/config/probe.rs");
            // An https probe is a TLS client: its trust settings are built with rustls.
            let probe_tls =
                matches!(http, "rustls" | "rustls_pki_types") && path == "src/collect/probe/tls.rs";
            // The kubelet's pod-resources client is a gRPC client over a unix socket: tonic
            // wants the stream wrapped in hyper-util's TokioIo. The Kubernetes API answers JSON
            // (a namespace's lease labels).
            let kubelet_client = http == "hyper_util" && path == "src/collect/k8s/pod_resources.rs"
                || http == "serde_json" && path == "src/collect/k8s/leases.rs";
            if text.contains(&format!("{http}::"))
                && !parses_probe_json
                && !probe_tls
                && !kubelet_client
            {
                // The demo's simulated inference server is an HTTP server of its own.
                let demo_server = path == "src/demo/server.rs"
                    && matches!(http, "axum" | "serde_json" | "hyper" | "hyper_util");
                // What survives a restart is written as JSON lines.
                let evidence_json = http == "serde_json" && path.starts_with("src/evidence/");
                assert!(
                    path.starts_with("src/export/") || demo_server || evidence_json,
                    "{path} uses {http}"
                );
            }
        }
    }
}

#[test]
fn model_types_are_not_serializable() {
    for entry in std::fs::read_dir(root().join("src/model")).unwrap() {
        let path = entry.unwrap().path();
        let model = std::fs::read_to_string(&path).unwrap();
        assert!(
            !model.contains("Serialize"),
            "{} must stay serde-free; DTOs live in export/json/",
            path.display()
        );
    }
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let quick_start = readme
        .split("## Quick start")
        .nth(1)
        .expect("README has a Quick start section");
    let block = quick_start
        .split("```")
        .nth(1)
        .expect("Quick start has a code block");
    let commands: Vec<&str> = block
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "quick start must have exactly two commands: {commands:?}"
    );
    assert!(
        commands[0].contains("gpulse") && commands[0].contains("demo"),
        "{commands:?}"
    );
    let test_command = commands[1];
    assert!(
        ci.lines()
            .any(|l| l.trim() == test_command || l.trim().ends_with(test_command)),
        ".ci/run does not run the README test command `{test_command}`"
    );
}

#[test]
fn pure_modules_do_no_io_and_read_no_clock() {
    // health/ and score/ judge; model/ is plain data. Time is a parameter.
    for dir in ["src/health", "src/score", "src/model"] {
        let files = sources(dir);
        assert!(!files.is_empty(), "{dir} has no sources");
        for (path, text) in files {
            for banned in [
                "tokio",
                "Instant",
                "SystemTime::now",
                "std::fs",
                "std::net",
                "async ",
                ".await",
            ] {
                assert!(!text.contains(banned), "{path} uses {banned}");
            }
        }
    }
}
