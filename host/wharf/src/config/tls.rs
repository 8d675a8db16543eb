//! `[server.tls]`: the certificate and key the HTTP and gRPC listeners
//! serve, and reading them into a rustls identity.
//!
//! Both files are PEM: `cert_file` holds the certificate chain, the server's
//! own certificate first; `key_file` holds one private key (PKCS#8, PKCS#1
//! or SEC1). The key must belong to the first certificate. They are read at
//! load (so `check-config` catches a bad pair) and again by every reload;
//! errors name the key and the file's absolute path, never key material.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The PEM certificate chain, the server's certificate first. Relative
    /// to the config file.
    pub cert_file: PathBuf,
    /// The PEM private key of that certificate. Relative to the config file.
    pub key_file: PathBuf,
}

/// A failed read: the key (`cert_file` or `key_file`) and the problem.
pub type Problem = (&'static str, String);

impl Tls {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        self.cert_file = super::normalize(&base.join(&self.cert_file));
        self.key_file = super::normalize(&base.join(&self.key_file));
    }

    /// Reads and checks the pair: a chain of at least one certificate, a
    /// key the crypto provider can sign with, and the key matching the
    /// chain's first certificate.
    pub fn identity(&self) -> Result<Arc<CertifiedKey>, Problem> {
        let (cert, key) = (&self.cert_file, &self.key_file);
        let cert_pem =
            std::fs::read(cert).map_err(|e| ("cert_file", format!("cannot read {}: {e}", cert.display())))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("cert_file", format!("{} is not valid PEM: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(("cert_file", format!("no certificate (BEGIN CERTIFICATE) in {}", cert.display())));
        }
        let key_pem =
            std::fs::read(key).map_err(|e| ("key_file", format!("cannot read {}: {e}", key.display())))?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            ("key_file", format!("no private key (BEGIN PRIVATE KEY) in {}: {e}", key.display()))
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(private)
            .map_err(|e| ("key_file", format!("the key in {} cannot be used: {e}", key.display())))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            // A key that cannot tell its public half is checked by the
            // handshake instead.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(Arc::new(certified))
            }
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err((
                "key_file",
                format!(
                    "the key in {} does not belong to the first certificate in {}",
                    key.display(),
                    cert.display()
                ),
            )),
            Err(e) => {
                Err(("cert_file", format!("the first certificate in {} is not usable: {e}", cert.display())))
            }
        }
    }
}
