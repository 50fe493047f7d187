//! What proves a request comes from Meta: the verify token of the subscription handshake, and
//! the app secret's HMAC-SHA256 of the raw body in `X-Hub-Signature-256: sha256=<hex>`.

use std::time::Duration;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::signature::{SecretError, SignatureError, Verifier};

/// A configured WhatsApp source: the app secrets (the current one and any previous ones) and the
/// verify token, kept as its SHA-256 digest so that comparing takes the same time whatever the
/// guess.
pub struct WhatsappSource {
    secrets: Verifier,
    verify_token: [u8; 32],
}

impl std::fmt::Debug for WhatsappSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WhatsappSource(..)")
    }
}

impl WhatsappSource {
    pub fn new(
        app_secret: &str,
        previous: &[&str],
        verify_token: &str,
    ) -> Result<WhatsappSource, SecretError> {
        // The tolerance applies to Standard Webhooks timestamps, which Meta does not send.
        let secrets = Verifier::new(app_secret, previous, Duration::ZERO)?;
        Ok(WhatsappSource {
            secrets,
            verify_token: Sha256::digest(verify_token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the verify token.
    pub fn admits_token(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.verify_token))
    }

    /// Checks `X-Hub-Signature-256` over `body` with each accepted app secret.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        self.secrets.verify_hub_signature(headers, body)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::signature::signer;

    fn signed(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(signature).expect("header"),
        );
        headers
    }

    #[test]
    fn the_current_and_the_previous_app_secrets_verify_and_nothing_else_does() {
        let source = WhatsappSource::new("new-app-secret", &["old-app-secret"], "token").expect("source");
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        for secret in ["new-app-secret", "old-app-secret"] {
            assert_eq!(
                source.verify(&signed(&signer::github(secret, body)), body),
                Ok(())
            );
        }
        assert_eq!(
            source.verify(&signed(&signer::github("another", body)), body),
            Err(SignatureError::NoMatch)
        );
        let mut other_scheme = HeaderMap::new();
        other_scheme.insert(
            "x-signature",
            HeaderValue::from_str(&crate::signature::SigningKey::new(b"new-app-secret").sign(body))
                .expect("header"),
        );
        assert_eq!(source.verify(&other_scheme, body), Err(SignatureError::Missing));
    }

    /// Meta signs as GitHub does (`X-Hub-Signature-256: sha256=` and the hex HMAC-SHA256 of the
    /// raw body); GitHub's documentation publishes this example of the scheme ("Validating
    /// webhook deliveries"), which Meta's does not.
    #[test]
    fn the_published_example_of_the_scheme_verifies() {
        let source = WhatsappSource::new("It's a Secret to Everybody", &[], "token").expect("source");
        let published = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(source.verify(&signed(published), b"Hello, World!"), Ok(()));
        assert_eq!(
            source.verify(&signed(published), b"Hello, World?"),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn only_the_verify_token_is_admitted() {
        let source = WhatsappSource::new("secret", &[], "meatyhamhock").expect("source");
        assert!(source.admits_token("meatyhamhock"));
        for bad in ["", "meatyhamhoc", "meatyhamhockk", "MEATYHAMHOCK"] {
            assert!(!source.admits_token(bad), "{bad}");
        }
    }
}
