//! HTTPS: the rustls server configuration built from the PEM files of `http.tls_cert_file`
//! and `http.tls_key_file`, reloaded on SIGHUP and when either file changes.
//!
//! The ring crypto provider is installed explicitly in every config (no process-wide default
//! is assumed). Only HTTP/1.1 is offered over ALPN, matching the server. A reload that fails
//! (bad PEM, a key that does not fit the certificate, a file missing mid-rotation) keeps the
//! previous configuration; see [`super::reload`]. A certificate that has expired or is not
//! valid yet is served anyway (clients decide, and refusing it would take HTTPS down over a
//! clock) with a warning naming the date; so is a private key file others can read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::reload::{LoadError, Reloadable, Source};

/// The server configuration in use; each TLS handshake takes [`Reloadable::current`].
pub type TlsConfig = Reloadable<ServerConfig>;

/// Config key of the certificate chain file.
pub const CERT_KEY: &str = "http.tls_cert_file";
/// Config key of the private key file.
pub const KEY_KEY: &str = "http.tls_key_file";

/// Loads the certificate chain and key; an error names the config key and file at fault.
/// Reading the files waits at most `deadline`.
pub fn load(
    cert_file: PathBuf,
    key_file: PathBuf,
    deadline: Duration,
) -> Result<TlsConfig, LoadError> {
    Reloadable::load(
        "TLS certificate",
        vec![
            Source::new(CERT_KEY, cert_file),
            Source::new(KEY_KEY, key_file),
        ],
        build,
        deadline,
    )
}

/// Builds a server config from `[certificate chain, private key]`.
fn build(sources: &[Source], warnings: &mut Vec<String>) -> Result<ServerConfig, LoadError> {
    let [cert_file, key_file] = sources else {
        return Err(LoadError {
            key: CERT_KEY,
            path: PathBuf::new(),
            message: "internal error: expected a certificate and a key file".to_owned(),
        });
    };

    let cert_pem = cert_file.read()?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_file.error(format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(
            cert_file.error("no CERTIFICATE block found (expected a PEM certificate chain)")
        );
    }

    let problem = chain
        .first()
        .and_then(|leaf| validity_problem(leaf, UnixTime::now()));

    let (key_pem, key_meta) = key_file.read_with_metadata()?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => key_file.error(
            "no PRIVATE KEY block found (expected a PEM PKCS#8, PKCS#1 or SEC1 private key)",
        ),
        e => key_file.error(format!("invalid PEM: {e}")),
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_file.error(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            key_file.error(format!(
                "unusable private key, or it does not match the certificate in {}: {e}",
                cert_file.path.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Served anyway (clients decide; a renewal may be on its way), but loudly, at start and
    // on every reload: an expired certificate otherwise shows up only as clients' errors.
    if let Some(problem) = problem {
        warnings.push(format!(
            "{CERT_KEY} ({}): the certificate {problem}; clients will refuse it",
            cert_file.path.display()
        ));
    }
    warnings.extend(key_file.readable_by_others(&key_meta));
    Ok(config)
}

/// What is wrong with the leaf certificate's validity period at `now`, if anything, as the
/// end of a sentence ("expired at …", "is not valid before …").
///
/// rustls-webpki checks a certificate's dates before anything else, so verifying it against
/// no trust anchor at all yields the date error when there is one, and a path-building error
/// (which this ignores) when the dates are fine.
pub fn validity_problem(leaf: &CertificateDer<'_>, now: UnixTime) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let date = |t: UnixTime| {
        humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs()))
    };
    match cert.verify_for_usage(
        &[],
        &[],
        &[],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    ) {
        Err(webpki::Error::CertExpired { not_after, .. }) => {
            Some(format!("expired at {}", date(not_after)))
        }
        Err(webpki::Error::CertNotValidYet { not_before, .. }) => {
            Some(format!("is not valid before {}", date(not_before)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::reload::Reload;
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn write_pair(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_a_pair_and_offers_http1_only() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let tls = load(cert, key, SECOND).unwrap();
        assert_eq!(tls.current().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");

        let missing = load(dir.path().join("nope.crt"), key.clone(), SECOND).unwrap_err();
        assert_eq!(missing.key, CERT_KEY);
        assert!(missing.message.starts_with("cannot read"), "{missing}");

        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = load(garbage.clone(), key.clone(), SECOND).unwrap_err();
        assert_eq!((err.key, err.path.as_path()), (CERT_KEY, garbage.as_path()));

        let err = load(cert.clone(), cert.clone(), SECOND).unwrap_err();
        assert_eq!(err.key, KEY_KEY);
        assert!(err.message.contains("no PRIVATE KEY"), "{err}");

        let err = load(cert, other_key.clone(), SECOND).unwrap_err();
        assert_eq!(
            (err.key, err.path.as_path()),
            (KEY_KEY, other_key.as_path())
        );
        assert!(err.message.contains("does not match"), "{err}");
    }

    #[test]
    fn a_broken_reload_keeps_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let tls = load(cert.clone(), key, SECOND).unwrap();
        let before = tls.current();
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        assert_eq!(tls.reload(false), Reload::Failed);
        assert!(Arc::ptr_eq(&before, &tls.current()));
    }

    /// A self-signed certificate valid from `from` to `until` (year, month, day).
    fn dated(from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn an_expired_or_not_yet_valid_certificate_is_named() {
        // 2026-06-01T00:00:00Z
        let now = UnixTime::since_unix_epoch(Duration::from_secs(1_780_272_000));
        let expired = dated((2020, 1, 1), (2026, 1, 1));
        assert_eq!(
            validity_problem(&expired, now).as_deref(),
            Some("expired at 2026-01-01T00:00:00Z")
        );
        let early = dated((2027, 3, 1), (2030, 1, 1));
        assert_eq!(
            validity_problem(&early, now).as_deref(),
            Some("is not valid before 2027-03-01T00:00:00Z")
        );
        assert_eq!(
            validity_problem(&dated((2026, 1, 1), (2027, 1, 1)), now),
            None
        );
        // Not a certificate at all: nothing to say here (rustls refuses it when building).
        assert_eq!(
            validity_problem(&CertificateDer::from(vec![1, 2, 3]), now),
            None
        );
    }

    #[test]
    fn an_expired_certificate_is_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.path().join("c"), dir.path().join("k"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        // A warning, not an error: refusing it would take HTTPS down over a clock.
        let tls = load(cert_file, key_file, SECOND).unwrap();
        let warnings = tls.take_startup_warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("expired at 2001-01-01T00:00:00Z")),
            "{warnings:?}"
        );
        assert!(tls.take_startup_warnings().is_empty(), "logged once");
    }
}
