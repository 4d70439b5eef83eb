//! HTTPS: the rustls server configuration built from the PEM files of `http.tls_cert_file`
//! and `http.tls_key_file`, reloaded on SIGHUP and when either file changes.
//!
//! The ring crypto provider is installed explicitly in every config (no process-wide default
//! is assumed). Only HTTP/1.1 is offered over ALPN, matching the server. A reload that fails
//! (bad PEM, a key that does not fit the certificate, a file missing mid-rotation) keeps the
//! previous configuration; see [`super::reload`].

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::reload::{LoadError, Reloadable, Source};

/// The server configuration in use; each TLS handshake takes [`Reloadable::current`].
pub type TlsConfig = Reloadable<ServerConfig>;

/// Config key of the certificate chain file.
pub const CERT_KEY: &str = "http.tls_cert_file";
/// Config key of the private key file.
pub const KEY_KEY: &str = "http.tls_key_file";

/// Loads the certificate chain and key; an error names the config key and file at fault.
pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<TlsConfig, LoadError> {
    Reloadable::load(
        "TLS certificate",
        vec![
            Source::new(CERT_KEY, cert_file),
            Source::new(KEY_KEY, key_file),
        ],
        build,
    )
}

/// Builds a server config from `[certificate chain, private key]`.
fn build(sources: &[Source]) -> Result<ServerConfig, LoadError> {
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

    let key_pem = key_file.read()?;
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
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::super::reload::Reload;
    use super::*;

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
        let tls = load(cert, key).unwrap();
        assert_eq!(tls.current().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");

        let missing = load(dir.path().join("nope.crt"), key.clone()).unwrap_err();
        assert_eq!(missing.key, CERT_KEY);
        assert!(missing.message.starts_with("cannot read"), "{missing}");

        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = load(garbage.clone(), key.clone()).unwrap_err();
        assert_eq!((err.key, err.path.as_path()), (CERT_KEY, garbage.as_path()));

        let err = load(cert.clone(), cert.clone()).unwrap_err();
        assert_eq!(err.key, KEY_KEY);
        assert!(err.message.contains("no PRIVATE KEY"), "{err}");

        let err = load(cert, other_key.clone()).unwrap_err();
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
        let tls = load(cert.clone(), key).unwrap();
        let before = tls.current();
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        assert_eq!(tls.reload(false), Reload::Failed);
        assert!(Arc::ptr_eq(&before, &tls.current()));
    }
}
