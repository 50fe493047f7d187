//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` ask, with rustls.
//!
//! | `sslmode`              | encrypted                  | the server's certificate             |
//! |------------------------|----------------------------|--------------------------------------|
//! | `disable`, `allow`     | no                         | –                                    |
//! | `prefer` (the default) | when the server offers TLS | not checked                          |
//! | `require`              | always                     | not checked, unless `sslrootcert` is given: then as `verify-ca` (libpq does the same) |
//! | `verify-ca`            | always                     | signed by a trusted CA               |
//! | `verify-full`          | always                     | signed by a trusted CA, and names the host connected to |
//!
//! The trusted CAs are those of the PEM file `sslrootcert` names, or the system's when it is
//! absent or says `system`. The driver knows neither verify mode nor `sslrootcert`, so both are
//! taken out of the URL before it is parsed.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::CancelToken;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// What the URL's `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the trusted certificate authorities come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    System,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: Mode,
    /// `None` when the URL names no `sslrootcert`.
    pub roots: Option<Roots>,
}

/// How connections are made: in the clear or through rustls.
#[derive(Clone)]
pub enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

impl Tls {
    /// Asks the server to cancel what `token`'s connection is running.
    pub async fn cancel(&self, token: &CancelToken) -> Result<(), tokio_postgres::Error> {
        match self {
            Tls::Plain => token.cancel_query(NoTls).await,
            Tls::Rustls(connector) => token.cancel_query(connector.clone()).await,
        }
    }
}

/// `url` without `sslmode` and `sslrootcert`, and the TLS they ask for (libpq's default,
/// `prefer`, when there is no `sslmode`).
pub fn take_tls_settings(url: &str) -> Result<(String, TlsSettings), StoreError> {
    let mut settings = TlsSettings {
        mode: Mode::Prefer,
        roots: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), settings));
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (name, value) = form_urlencoded::parse(pair.as_bytes())
            .next()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .unwrap_or_default();
        match name.as_str() {
            "sslmode" => settings.mode = parse_mode(&value)?,
            "sslrootcert" if value == "system" => settings.roots = Some(Roots::System),
            "sslrootcert" => settings.roots = Some(Roots::File(PathBuf::from(value))),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, settings))
}

fn parse_mode(value: &str) -> Result<Mode, StoreError> {
    match value {
        // `allow` tries without TLS first, which nearly always succeeds.
        "disable" | "allow" => Ok(Mode::Disable),
        "prefer" => Ok(Mode::Prefer),
        "require" => Ok(Mode::Require),
        "verify-ca" => Ok(Mode::VerifyCa),
        "verify-full" => Ok(Mode::VerifyFull),
        other => Err(StoreError::Unavailable(format!(
            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ))),
    }
}

impl TlsSettings {
    /// The mode as the driver takes it: whether to ask for TLS, and whether to insist.
    pub fn driver_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector that checks the server as the settings ask.
    pub fn connector(&self) -> Result<Tls, StoreError> {
        let verify = match (self.mode, &self.roots) {
            (Mode::Disable, _) => return Ok(Tls::Plain),
            (Mode::Prefer, _) | (Mode::Require, None) => None,
            (Mode::Require | Mode::VerifyCa, roots) => Some((roots, false)),
            (Mode::VerifyFull, roots) => Some((roots, true)),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match verify {
            None => Arc::new(EncryptOnly(Arc::clone(&provider))),
            Some((roots, check_name)) => {
                let roots = trusted_roots(roots.as_ref().unwrap_or(&Roots::System))?;
                let chain =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                        .build()
                        .map_err(|error| {
                            tls_error(format!("cannot build the certificate verifier: {error}"))
                        })?;
                if check_name {
                    chain
                } else {
                    Arc::new(AnyName(chain))
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| tls_error(format!("cannot configure TLS: {error}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls::Rustls(MakeRustlsConnect::new(config)))
    }
}

fn tls_error(detail: String) -> StoreError {
    StoreError::Unavailable(detail)
}

/// The certificate authorities of a PEM file, or the system's.
fn trusted_roots(roots: &Roots) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let shown = path.display();
            for certificate in CertificateDer::pem_file_iter(path)
                .map_err(|error| tls_error(format!("sslrootcert {shown}: {error}")))?
            {
                let certificate =
                    certificate.map_err(|error| tls_error(format!("sslrootcert {shown}: {error}")))?;
                store
                    .add(certificate)
                    .map_err(|error| tls_error(format!("sslrootcert {shown}: {error}")))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    if store.is_empty() {
        return Err(tls_error(match roots {
            Roots::File(path) => format!("sslrootcert {} holds no certificate", path.display()),
            Roots::System => "the system has no trusted certificate authorities; set sslrootcert".to_owned(),
        }));
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted CA; the name in the certificate is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is verified before the name, so a name mismatch means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require`: the connection is encrypted; the server's certificate is not checked
/// against a CA, which is what these modes mean for libpq too.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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

    // The handshake signatures are still checked: the peer must hold the key of the certificate
    // it sent, so the session key is not shared with a passive eavesdropper.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> (String, TlsSettings) {
        take_tls_settings(url).expect("settings")
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        assert_eq!(
            settings("postgres://u@db/app"),
            (
                "postgres://u@db/app".to_owned(),
                TlsSettings {
                    mode: Mode::Prefer,
                    roots: None
                }
            )
        );
        assert_eq!(
            settings(
                "postgres://u@db/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x"
            ),
            (
                "postgres://u@db/app?application_name=x".to_owned(),
                TlsSettings {
                    mode: Mode::VerifyFull,
                    roots: Some(Roots::File("/etc/ca.pem".into()))
                }
            )
        );
        assert_eq!(
            settings(
                "postgres://db/app?options=-csearch_path%3Ds,public&sslmode=verify-ca&sslrootcert=system"
            ),
            (
                "postgres://db/app?options=-csearch_path%3Ds,public".to_owned(),
                TlsSettings {
                    mode: Mode::VerifyCa,
                    roots: Some(Roots::System)
                }
            )
        );
        assert_eq!(settings("postgres://db/app?sslmode=allow").1.mode, Mode::Disable);
        assert!(take_tls_settings("postgres://db/app?sslmode=sometimes").is_err());
    }

    #[test]
    fn each_mode_asks_the_driver_for_what_it_needs() {
        for (mode, driver) in [
            (Mode::Disable, SslMode::Disable),
            (Mode::Prefer, SslMode::Prefer),
            (Mode::Require, SslMode::Require),
            (Mode::VerifyCa, SslMode::Require),
            (Mode::VerifyFull, SslMode::Require),
        ] {
            assert_eq!(
                TlsSettings { mode, roots: None }.driver_mode(),
                driver,
                "{mode:?}"
            );
        }
    }

    #[test]
    fn a_root_certificate_file_that_holds_none_is_refused() {
        let empty = tempfile::NamedTempFile::new().expect("file");
        let settings = TlsSettings {
            mode: Mode::VerifyFull,
            roots: Some(Roots::File(empty.path().to_owned())),
        };
        assert!(settings.connector().is_err());
        let missing = TlsSettings {
            mode: Mode::VerifyCa,
            roots: Some(Roots::File("/no/such/ca.pem".into())),
        };
        assert!(missing.connector().is_err());
    }
}
