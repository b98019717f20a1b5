//! TLS for the amqps listener (rustls): the server configuration built from `[tls]`, reloaded
//! on SIGHUP, and the user name a verified client certificate gives EXTERNAL logins.
//!
//! The certificate, key and CA files are read when the broker starts (a file that cannot be
//! used stops the start with a message naming it) and again on [`Tls::reload`]; a reload that
//! fails keeps the configuration in use. Connections already open keep the one they started
//! with.

use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::config::TlsConfig;

/// The amqps listener's TLS settings, swappable at runtime.
pub struct Tls {
    config: TlsConfig,
    acceptor: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Tls {
    /// Read the certificate, key and CA files of `[tls]`.
    pub fn load(config: &TlsConfig) -> Result<Arc<Tls>, String> {
        let acceptor = build(config)?;
        Ok(Arc::new(Tls { config: config.clone(), acceptor: RwLock::new(acceptor) }))
    }

    /// Read the files again (SIGHUP); on error the current settings stay.
    pub fn reload(&self) -> Result<(), String> {
        let acceptor = build(&self.config)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        Ok(())
    }

    /// The settings for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(c: &TlsConfig) -> Result<TlsAcceptor, String> {
    let (Some(certfile), Some(keyfile)) = (&c.certfile, &c.keyfile) else {
        return Err("tls.certfile and tls.keyfile are needed".into());
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls.certfile {}: {e}", certfile.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.certfile {}: no certificate in it", certfile.display()));
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| format!("tls.keyfile {}: {e}", keyfile.display()))?;
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    let wanted =
        if c.versions.is_empty() { vec!["tlsv1.3".to_string(), "tlsv1.2".to_string()] } else { c.versions.clone() };
    for v in &wanted {
        versions.push(match v.as_str() {
            "tlsv1.3" => &rustls::version::TLS13,
            "tlsv1.2" => &rustls::version::TLS12,
            other => return Err(format!("tls.versions: {other:?} is not offered")),
        });
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls.versions: {e}"))?;
    let builder = if c.verify_peer {
        let Some(ca) = &c.cacertfile else { return Err("tls.verify_peer needs tls.cacertfile".into()) };
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("tls.cacertfile {}: {e}", ca.display()))?;
        for cert in cas {
            roots.add(cert).map_err(|e| format!("tls.cacertfile {}: {e}", ca.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let verifier = if c.fail_if_no_peer_cert { verifier } else { verifier.allow_unauthenticated() };
        builder
            .with_client_cert_verifier(verifier.build().map_err(|e| format!("tls.cacertfile {}: {e}", ca.display()))?)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.certfile/keyfile {}: {e}", certfile.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The user a client certificate names (RabbitMQ's `ssl_cert_login_from`): `common_name`,
/// `subject_alternative_name` (the first DNS name or e-mail address) or `distinguished_name`
/// (RFC 4514: the last RDN first, e.g. `CN=alice,O=Example`).
pub fn cert_login(der: &[u8], from: &str) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    match from {
        "subject_alternative_name" => {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some(s.to_string()),
                _ => None,
            })
        }
        "distinguished_name" => {
            let rdns: Vec<_> = cert.subject().iter_rdn().collect();
            let parts: Vec<String> = rdns
                .into_iter()
                .rev()
                .map(|rdn| {
                    rdn.iter()
                        .map(|a| {
                            let oid = a.attr_type().to_id_string();
                            let name = match oid.as_str() {
                                "2.5.4.3" => "CN",
                                "2.5.4.10" => "O",
                                "2.5.4.11" => "OU",
                                "2.5.4.7" => "L",
                                "2.5.4.8" => "ST",
                                "2.5.4.6" => "C",
                                "0.9.2342.19200300.100.1.25" => "DC",
                                _ => oid.as_str(),
                            }
                            .to_string();
                            format!("{name}={}", a.as_str().unwrap_or_default())
                        })
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .collect();
            Some(parts.join(","))
        }
        _ => cert.subject().iter_common_name().next()?.as_str().ok().map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_user() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["svc.example.com".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
        let der = p.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(cert_login(&der, "common_name").as_deref(), Some("alice"));
        assert_eq!(cert_login(&der, "subject_alternative_name").as_deref(), Some("svc.example.com"));
        let dn = cert_login(&der, "distinguished_name").unwrap();
        assert!(dn == "O=Example,CN=alice" || dn == "CN=alice,O=Example", "{dn}");
        assert_eq!(cert_login(b"not a certificate", "common_name"), None);
    }
}
