//! TLS client settings of the probe collector: which certificates an `https` probe trusts.
//!
//! Built here (not by reqwest) so the probe uses the same rustls + ring stack as the server
//! side and works in minimal containers without a system CA bundle: the Mozilla roots are
//! compiled in (webpki-roots), a probe's `tls_ca_file` adds a private CA, and
//! `tls_insecure_skip_verify` accepts any certificate for lab setups.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::config::files::{DevNull, read_small_file};

/// Makes ring the process-wide rustls provider (idempotent). reqwest is built without a
/// provider of its own, so every client in the process (the probes', the OTLP HTTP
/// exporter's) needs one installed before it is built; ring is the one the server side uses.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one first: fine either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The rustls client config for one probe; an error names the CA file and what is wrong.
pub fn client_config(ca_file: &str, insecure: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings refused: {e}"))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !ca_file.is_empty() {
            let (pem, _) = read_small_file(Path::new(ca_file), DevNull::Refused)
                .map_err(|e| format!("{ca_file}: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{ca_file} is not a PEM certificate file: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{ca_file} holds no PEM certificate"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{ca_file}: certificate refused: {e}"))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
}

/// `tls_insecure_skip_verify`: any certificate is accepted, but handshake signatures are
/// still checked so the connection is at least encrypted to whoever holds the key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_trusts_built_in_roots_and_a_missing_ca_file_is_an_error() {
        assert!(client_config("", false).is_ok());
        assert!(client_config("", true).is_ok());
        let err = client_config("/nonexistent/ca.pem", false).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(path.to_str().unwrap(), false).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
