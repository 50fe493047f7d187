//! The HTTP clients the service makes requests with (forwarding, `tail`, the CLI): TLS with the
//! system's trusted roots and the `ring` crypto provider that the database connections use too.
//! Every client is built here: reqwest has no crypto provider of its own in this build.

use std::sync::Arc;

/// A client builder with this service's TLS.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(tls_config())
}

/// A client with this service's TLS and reqwest's other defaults.
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .unwrap_or_else(|error| unreachable!("a client with default settings builds: {error}"))
}

fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        // A certificate the system lists but rustls cannot use is skipped, as browsers do.
        let _ = roots.add(certificate);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
}
