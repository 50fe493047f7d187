//! Forwarded messages are signed per Standard Webhooks: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the decoded
//! `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::config::ForwardConfigError;
use crate::signature::{SigningKey, standard_secret_bytes};

/// Signs each attempt with `FORWARD_SECRET`.
#[derive(Clone, Debug)]
pub struct Signer {
    key: SigningKey,
}

/// The three headers of one signed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
}

impl Signer {
    pub fn new(secret: &str) -> Result<Signer, ForwardConfigError> {
        let key = standard_secret_bytes(secret).ok_or(ForwardConfigError::BadSecret)?;
        Ok(Signer {
            key: SigningKey::new(&key),
        })
    }

    /// The headers of an attempt made at `timestamp` (Unix seconds): signed afresh each time,
    /// so a retry hours later still falls within a receiver's tolerance.
    pub fn sign(&self, webhook_id: &str, timestamp: u64, body: &[u8]) -> SignedHeaders {
        SignedHeaders {
            id: webhook_id.to_owned(),
            timestamp: timestamp.to_string(),
            signature: self.key.sign_standard(webhook_id, timestamp, body),
        }
    }
}

/// The `webhook-id` of a message: the same on every attempt and for every destination, so
/// receivers can deduplicate, and made of header-safe characters whatever the `message_id`
/// holds (`msg_` and the unpadded base64url SHA-256 of the `message_id`).
pub fn webhook_id(message_id: &str) -> String {
    format!(
        "msg_{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(message_id.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    use super::*;
    use crate::signature::Verifier;

    // The Standard Webhooks specification's test vector (its reference libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specifications_example_as_its_libraries_do() {
        let signer = Signer::new(SECRET).expect("a whsec_ secret");
        let headers = signer.sign(ID, TIMESTAMP, BODY);
        assert_eq!(headers.signature, SIGNATURE);
        assert_eq!(headers.timestamp, "1614265330");
        assert_eq!(headers.id, ID);
    }

    #[test]
    fn only_a_whsec_secret_signs() {
        assert!(Signer::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Signer::new("whsec_").is_err());
        assert!(Signer::new("whsec_not base64!").is_err());
    }

    #[test]
    fn a_webhook_id_is_stable_and_distinct() {
        assert_eq!(webhook_id("a"), webhook_id("a"));
        assert_ne!(webhook_id("a"), webhook_id("b"));
        assert_eq!(webhook_id("a").len(), 4 + 43);
    }

    proptest! {
        #[test]
        fn any_message_id_gives_a_header_safe_webhook_id(message_id in any::<String>()) {
            let id = webhook_id(&message_id);
            prop_assert!(HeaderValue::from_str(&id).is_ok());
            prop_assert!(id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'));
        }

        #[test]
        fn the_services_own_verifier_accepts_every_forwarded_signature(
            message_id in any::<String>(),
            timestamp in 0u64..=4_102_444_800,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let id = webhook_id(&message_id);
            let signed = Signer::new(SECRET).expect("secret").sign(&id, timestamp, &body);
            let mut headers = HeaderMap::new();
            headers.insert("webhook-id", HeaderValue::from_str(&signed.id).expect("header"));
            headers.insert("webhook-timestamp", HeaderValue::from_str(&signed.timestamp).expect("header"));
            headers.insert("webhook-signature", HeaderValue::from_str(&signed.signature).expect("header"));
            let verifier = Verifier::new(SECRET, &[], Duration::from_secs(300)).expect("secret");
            prop_assert!(verifier.verify(&headers, &body, timestamp).is_ok());
            body.first().map_or(Ok(()), |_| {
                let mut tampered = body.clone();
                tampered[0] ^= 1;
                prop_assert!(verifier.verify(&headers, &tampered, timestamp).is_err());
                Ok(())
            })?;
        }
    }
}
