//! Request signatures: HMAC-SHA256 over the raw body, compared in constant time (SPEC A2).

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const SIGNATURE_HEADER: &str = "x-signature";

/// Why a signature was refused. Logged, never shown to the client, and never holding a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header")]
    Missing,
    #[error("signature header sent more than once")]
    Repeated,
    #[error("signature is not 64 hex digits")]
    BadEncoding,
    #[error("signature does not match")]
    NoMatch,
}

impl SignatureError {
    /// A stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing_header",
            SignatureError::Repeated => "repeated_header",
            SignatureError::BadEncoding => "bad_encoding",
            SignatureError::NoMatch => "no_match",
        }
    }
}

/// A secret made ready for signing: the HMAC key schedule is computed once, not per request.
#[derive(Clone)]
pub struct SigningKey {
    keyed: HmacSha256,
}

impl SigningKey {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length (long ones are hashed first), so this cannot fail.
        let keyed = <HmacSha256 as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        SigningKey { keyed }
    }

    /// The lowercase hex `X-Signature` of `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        hex::encode(self.mac(body).finalize().into_bytes())
    }

    /// Checks the `X-Signature` header of a request against its raw body.
    pub fn verify_headers(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        let mut values = headers.get_all(SIGNATURE_HEADER).iter();
        let header = values.next().ok_or(SignatureError::Missing)?;
        if values.next().is_some() {
            return Err(SignatureError::Repeated);
        }
        self.verify_hex(header.as_bytes(), body)
    }

    /// Checks a hex signature (either case) over `body`; the comparison takes the same time
    /// however many leading bytes match.
    pub fn verify_hex(&self, signature_hex: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        let mut signature = [0u8; 32];
        hex::decode_to_slice(signature_hex, &mut signature).map_err(|_| SignatureError::BadEncoding)?;
        self.mac(body)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::NoMatch)
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231, test case 2.
    const KEY: &[u8] = b"Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";
    const DIGEST: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    fn key(secret: &[u8]) -> SigningKey {
        SigningKey::new(secret)
    }

    #[test]
    fn signs_like_rfc_4231() {
        assert_eq!(key(KEY).sign(DATA), DIGEST);
    }

    #[test]
    fn accepts_either_case_of_hex() {
        assert_eq!(key(KEY).verify_hex(DIGEST.as_bytes(), DATA), Ok(()));
        assert_eq!(
            key(KEY).verify_hex(DIGEST.to_uppercase().as_bytes(), DATA),
            Ok(())
        );
    }

    #[test]
    fn tells_bad_encoding_from_mismatch() {
        assert_eq!(
            key(KEY).verify_hex(b"123", DATA),
            Err(SignatureError::BadEncoding)
        );
        assert_eq!(
            key(KEY).verify_hex(&[b'g'; 64], DATA),
            Err(SignatureError::BadEncoding)
        );
        assert_eq!(
            key(KEY).verify_hex(format!("{DIGEST}00").as_bytes(), DATA),
            Err(SignatureError::BadEncoding)
        );
        assert_eq!(
            key(b"other").verify_hex(DIGEST.as_bytes(), DATA),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            key(KEY).verify_hex(DIGEST.as_bytes(), b"what do ya want for nothing!"),
            Err(SignatureError::NoMatch)
        );
    }
}
