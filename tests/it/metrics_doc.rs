//! `docs/metrics.md` is generated from the metric catalog; this test keeps it current.

#[test]
fn metrics_doc_matches_the_catalog() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let text = gpulse::export::catalog::markdown();
    if std::env::var_os("GPULSE_BLESS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        current == text,
        "docs/metrics.md differs from the catalog; regenerate it with \
         `GPULSE_BLESS=1 cargo test --test it metrics_doc` and review the diff"
    );
}
