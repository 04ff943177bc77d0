//! MQTT over TLS: the rustls server configuration of a listener (certificate chain, key,
//! optional client-certificate verification) and the identity of a verified client
//! certificate.
//!
//! rustls runs with the `ring` provider, named explicitly rather than taken from a process
//! default, so the outcome never depends on which providers the dependency graph happens
//! to enable.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use super::Error;
use crate::config::{CertIdentity, TlsListener};

/// The TLS side of a listener.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    identity: CertIdentity,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificates and key of `settings`.
    pub(crate) fn new(settings: &TlsListener) -> Result<Self, Error> {
        let config = server_config(settings)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            identity: settings.identity_from_cert,
        })
    }

    /// Runs the TLS handshake; returns the stream and, when the listener takes it as the
    /// username, the identity of the client's verified certificate.
    pub(crate) async fn accept<S>(&self, stream: S) -> io::Result<(TlsStream<S>, Option<String>)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let stream = self.acceptor.accept(stream).await?;
        // rustls hands out peer certificates only once they verified.
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| identity(leaf, self.identity));
        Ok((stream, identity))
    }
}

/// The rustls configuration of a listener.
fn server_config(settings: &TlsListener) -> Result<ServerConfig, Error> {
    if settings.require_client_cert && settings.client_ca.is_none() {
        return Err(Error::RequireWithoutCa);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.cert, "certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|source| Error::Pem {
        what: "private key",
        path: settings.key.clone(),
        source,
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(ca_file, "client CA certificates")? {
                roots.add(ca)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|source| Error::ClientCa {
                path: ca_file.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(chain, key)?)
}

/// Every certificate in a PEM file; an error when there is none.
pub(crate) fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = |source| Error::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certificates.is_empty() {
        return Err(pem(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certificates)
}

/// The identity `which` takes from a certificate: its subject's common name (CN), or its
/// first e-mail, DNS or URI subject alternative name. `None` when `which` is
/// [`CertIdentity::None`], or for a certificate that does not parse or lacks that name.
pub(crate) fn identity(der: &[u8], which: CertIdentity) -> Option<String> {
    if which == CertIdentity::None {
        return None;
    }
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = &certificate.tbs_certificate;
    if which == CertIdentity::Cn {
        return tbs
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|attribute| attribute.oid == x509_cert::der::oid::db::rfc4519::CN)
            .find_map(|attribute| {
                // DirectoryString: UTF8String and PrintableString in practice; IA5String
                // and TeletexString in old certificates, read as UTF-8 (ASCII in practice).
                match attribute.value.tag() {
                    Tag::Utf8String
                    | Tag::PrintableString
                    | Tag::Ia5String
                    | Tag::TeletexString => std::str::from_utf8(attribute.value.value()).ok(),
                    _ => None,
                }
            })
            .filter(|name| !name.is_empty())
            .map(str::to_owned);
    }
    let (_, alt_names) = tbs.get::<SubjectAltName>().ok().flatten()?;
    alt_names.0.iter().find_map(|name| match name {
        GeneralName::Rfc822Name(name)
        | GeneralName::DnsName(name)
        | GeneralName::UniformResourceIdentifier(name) => Some(name.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn certificate(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Fulmar");
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_or_the_first_alt_name() {
        let der = certificate(
            Some("sensor-17"),
            vec![
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
                SanType::DnsName("gw.example".try_into().unwrap()),
            ],
        );
        assert_eq!(
            identity(&der, CertIdentity::Cn).as_deref(),
            Some("sensor-17")
        );
        assert_eq!(
            identity(&der, CertIdentity::San).as_deref(),
            Some("ops@example.org")
        );
        assert_eq!(identity(&der, CertIdentity::None), None);
    }

    #[test]
    fn nobody_named_or_no_certificate() {
        let der = certificate(None, vec![SanType::IpAddress([10, 0, 0, 1].into())]);
        assert_eq!(identity(&der, CertIdentity::Cn), None);
        assert_eq!(identity(&der, CertIdentity::San), None);
        assert_eq!(identity(b"not a certificate", CertIdentity::Cn), None);
    }

    #[test]
    fn missing_files_and_a_ca_less_requirement_are_errors() {
        let settings = TlsListener {
            addr: ([127, 0, 0, 1], 8883).into(),
            path: None,
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
            require_client_cert: false,
            identity_from_cert: CertIdentity::Cn,
        };
        let error = server_config(&settings).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/cert.pem"),
            "{error}"
        );
        let settings = TlsListener {
            require_client_cert: true,
            ..settings
        };
        assert!(matches!(
            server_config(&settings),
            Err(Error::RequireWithoutCa)
        ));
    }
}
