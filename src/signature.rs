//! Request signatures: one [`Verifier`] that checks whichever schemes a request
//! carries, against the current secret and every previous one still accepted.
//!
//! - `X-Signature: <hex>`: HMAC-SHA256 of the raw body (the original scheme);
//! - `X-Hub-Signature-256: sha256=<hex>`: the same MAC, GitHub's header;
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//!   (space-separated `v1,<base64>` entries, any one may match), the MAC taken over
//!   `id.timestamp.body`, with a `whsec_<base64>` secret base64-decoded first;
//! - Svix: Standard Webhooks under the names `svix-id`, `svix-timestamp` and `svix-signature`,
//!   which senders built on Svix send;
//!
//! The providers' routes (`crate::sources`) check one scheme each: WhatsApp's with
//! [`Verifier::verify_hub_signature`], Twilio's with a verifier of its own.
//!
//! A request passes when one scheme it carries verifies. Every comparison of a MAC takes the same
//! time however many bytes match, and every secret is tried even after one matched, so timing
//! tells neither how close a guess was nor which secret signed. A refusal names the scheme and the
//! check that failed, for the log; it never holds a secret or the expected signature.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

pub const SIGNATURE_HEADER: &str = "x-signature";
pub const GITHUB_HEADER: &str = "x-hub-signature-256";
pub const STANDARD_ID_HEADER: &str = "webhook-id";
pub const STANDARD_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const STANDARD_SIGNATURE_HEADER: &str = "webhook-signature";
pub const SVIX_ID_HEADER: &str = "svix-id";
pub const SVIX_TIMESTAMP_HEADER: &str = "svix-timestamp";
pub const SVIX_SIGNATURE_HEADER: &str = "svix-signature";

/// The names under which a sender sends the three Standard Webhooks headers.
#[derive(Debug, Clone, Copy)]
struct StandardHeaderNames {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

impl StandardHeaderNames {
    const STANDARD: StandardHeaderNames = StandardHeaderNames {
        id: STANDARD_ID_HEADER,
        timestamp: STANDARD_TIMESTAMP_HEADER,
        signature: STANDARD_SIGNATURE_HEADER,
    };
    const SVIX: StandardHeaderNames = StandardHeaderNames {
        id: SVIX_ID_HEADER,
        timestamp: SVIX_TIMESTAMP_HEADER,
        signature: SVIX_SIGNATURE_HEADER,
    };

    fn any_in(self, headers: &HeaderMap) -> bool {
        [self.id, self.timestamp, self.signature]
            .iter()
            .any(|name| headers.contains_key(*name))
    }
}

/// GitHub's value is `sha256=` then the hex MAC.
const GITHUB_PREFIX: &[u8] = b"sha256=";
/// The Standard Webhooks way of writing a base64 secret.
const STANDARD_SECRET_PREFIX: &str = "whsec_";
/// The Standard Webhooks version tag of an HMAC-SHA256 signature.
const STANDARD_VERSION: &[u8] = b"v1";
/// The default `WEBHOOK_TOLERANCE_SECS`.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(crate::config::defaults::WEBHOOK_TOLERANCE_SECS);

const MAC_LEN: usize = 32;
type MacBytes = [u8; MAC_LEN];

/// The ways a request may be signed, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    Svix,
    GitHub,
    XSignature,
}

impl Scheme {
    pub const ALL: [Scheme; 4] = [
        Scheme::StandardWebhooks,
        Scheme::Svix,
        Scheme::GitHub,
        Scheme::XSignature,
    ];

    /// A stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard_webhooks",
            Scheme::Svix => "svix",
            Scheme::GitHub => "github",
            Scheme::XSignature => "x_signature",
        }
    }

    /// Whether `headers` carry any header of this scheme.
    fn is_carried(self, headers: &HeaderMap) -> bool {
        match self {
            Scheme::StandardWebhooks => StandardHeaderNames::STANDARD.any_in(headers),
            Scheme::Svix => StandardHeaderNames::SVIX.any_in(headers),
            Scheme::GitHub => headers.contains_key(GITHUB_HEADER),
            Scheme::XSignature => headers.contains_key(SIGNATURE_HEADER),
        }
    }
}

/// Which check refused a signature. Logged, never shown to the client, and never holding a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header")]
    Missing,
    #[error("signature header sent more than once")]
    Repeated,
    #[error("signature or timestamp is not in the scheme's encoding")]
    BadEncoding,
    #[error("timestamp outside the tolerance window")]
    StaleTimestamp,
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
            SignatureError::StaleTimestamp => "stale_timestamp",
            SignatureError::NoMatch => "no_match",
        }
    }
}

/// A refused request: the scheme judged (none when the request carried no signature header at
/// all) and why it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub scheme: Option<Scheme>,
    pub error: SignatureError,
}

/// A secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{setting} starts with whsec_ but the rest is not base64")]
    BadStandardSecret { setting: &'static str },
    #[error("{setting} has an empty secret in its list (write a comma inside a secret as \\,)")]
    EmptyPrevious { setting: &'static str },
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
        hex::encode(self.mac_of(&[body]))
    }

    /// Checks the `X-Signature` header of a request against its raw body with this key alone.
    pub fn verify_headers(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        let header = single_header(headers, SIGNATURE_HEADER)?;
        self.verify_hex(header.as_bytes(), body)
    }

    /// Checks a hex signature (either case) over `body`; the comparison takes the same time
    /// however many leading bytes match.
    pub fn verify_hex(&self, signature_hex: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        let claimed = decode_hex_mac(signature_hex)?;
        if bool::from(self.mac_of(&[body]).ct_eq(&claimed)) {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }

    /// The `v1,<base64>` entry of `webhook-signature` for a message `id` sent at `timestamp`
    /// (Standard Webhooks), with this key as the decoded secret.
    pub fn sign_standard(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let mac = self.mac_of(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
        format!("v1,{}", STANDARD.encode(mac))
    }

    /// The MAC of `parts` written one after the other.
    fn mac_of(&self, parts: &[&[u8]]) -> MacBytes {
        let mut mac = self.keyed.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// One accepted secret, keyed for the body schemes and for Standard Webhooks.
#[derive(Clone)]
struct Secret {
    /// The secret's bytes as written: `X-Signature` and GitHub.
    raw: SigningKey,
    /// Standard Webhooks: the base64-decoded bytes of a `whsec_` secret, else the bytes as written.
    standard: SigningKey,
}

impl Secret {
    fn new(secret: &str, setting: &'static str) -> Result<Secret, SecretError> {
        let standard = match secret.strip_prefix(STANDARD_SECRET_PREFIX) {
            Some(encoded) => SigningKey::new(&decode_standard_secret(encoded, setting)?),
            None => SigningKey::new(secret.as_bytes()),
        };
        Ok(Secret {
            raw: SigningKey::new(secret.as_bytes()),
            standard,
        })
    }
}

/// The key of a `whsec_` secret; `None` when `secret` is not one.
pub fn standard_secret_bytes(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(STANDARD_SECRET_PREFIX)?;
    decode_standard_secret(encoded, "FORWARD_SECRET").ok()
}

/// Standard base64, padded or not (the reference implementations accept both).
fn decode_standard_secret(encoded: &str, setting: &'static str) -> Result<Vec<u8>, SecretError> {
    STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .ok()
        .filter(|bytes| !bytes.is_empty())
        .ok_or(SecretError::BadStandardSecret { setting })
}

/// Checks a request's signature against the current secret and the previous ones.
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({} secrets, ..)", self.secrets.len())
    }
}

impl Verifier {
    /// A verifier accepting `current` and each of `previous` (empty ones are skipped).
    pub fn new(current: &str, previous: &[&str], tolerance: Duration) -> Result<Verifier, SecretError> {
        let mut secrets = vec![Secret::new(current, "WEBHOOK_SECRET")?];
        for secret in previous.iter().filter(|secret| !secret.is_empty()) {
            secrets.push(Secret::new(secret, "WEBHOOK_SECRET_PREVIOUS")?);
        }
        Ok(Verifier {
            secrets,
            tolerance_secs: tolerance.as_secs(),
        })
    }

    /// The secrets of `WEBHOOK_SECRET_PREVIOUS`: comma-separated, each trimmed of surrounding
    /// spaces. A comma inside a secret is written `\,` and a backslash before a comma `\\`;
    /// any other backslash is taken as written. An empty list is no secrets; an empty secret in
    /// a list (`a,,b`, a trailing comma) is refused rather than skipped, since it most likely
    /// means a secret was cut where it held a comma.
    pub fn split_previous(list: &str, setting: &'static str) -> Result<Vec<String>, SecretError> {
        if list.trim().is_empty() {
            return Ok(Vec::new());
        }
        let mut secrets = Vec::new();
        let mut current = String::new();
        let mut chars = list.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('\\', Some(&next @ (',' | '\\'))) => {
                    current.push(next);
                    chars.next();
                }
                (',', _) => secrets.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        secrets.push(current);
        secrets
            .into_iter()
            .map(|secret| secret.trim().to_owned())
            .map(|secret| {
                if secret.is_empty() {
                    Err(SecretError::EmptyPrevious { setting })
                } else {
                    Ok(secret)
                }
            })
            .collect()
    }

    /// Verifies whichever schemes `headers` carry; passes when one of them verifies. A refusal
    /// reports the first scheme tried (Standard Webhooks, Svix, GitHub, then `X-Signature`).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_unix_secs: u64) -> Result<Scheme, Refusal> {
        let mut first_refusal = None;
        for scheme in Scheme::ALL
            .into_iter()
            .filter(|scheme| scheme.is_carried(headers))
        {
            match self.verify_scheme(scheme, headers, body, now_unix_secs) {
                Ok(()) => return Ok(scheme),
                Err(error) => {
                    first_refusal.get_or_insert(Refusal {
                        scheme: Some(scheme),
                        error,
                    });
                }
            }
        }
        Err(first_refusal.unwrap_or(Refusal {
            scheme: None,
            error: SignatureError::Missing,
        }))
    }

    /// Checks `X-Hub-Signature-256` alone (Meta's header, GitHub's too), whatever else `headers`
    /// carry: a provider that signs one way only is held to that way.
    pub fn verify_hub_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        self.verify_scheme(Scheme::GitHub, headers, body, 0)
    }

    fn verify_scheme(
        &self,
        scheme: Scheme,
        headers: &HeaderMap,
        body: &[u8],
        now_unix_secs: u64,
    ) -> Result<(), SignatureError> {
        match scheme {
            Scheme::XSignature => {
                let claimed = decode_hex_mac(single_header(headers, SIGNATURE_HEADER)?.as_bytes())?;
                self.any_secret_matches(|secret| &secret.raw, &[body], &[claimed])
            }
            Scheme::GitHub => {
                let claimed = parse_github(single_header(headers, GITHUB_HEADER)?)?;
                self.any_secret_matches(|secret| &secret.raw, &[body], &[claimed])
            }
            Scheme::StandardWebhooks => {
                self.verify_standard(StandardHeaderNames::STANDARD, headers, body, now_unix_secs)
            }
            Scheme::Svix => self.verify_standard(StandardHeaderNames::SVIX, headers, body, now_unix_secs),
        }
    }

    fn verify_standard(
        &self,
        names: StandardHeaderNames,
        headers: &HeaderMap,
        body: &[u8],
        now_unix_secs: u64,
    ) -> Result<(), SignatureError> {
        let id = single_header(headers, names.id)?;
        let timestamp = single_header(headers, names.timestamp)?;
        let signatures = single_header(headers, names.signature)?;
        let sent_at = parse_unix_seconds(timestamp.as_bytes()).ok_or(SignatureError::BadEncoding)?;
        if sent_at.abs_diff(now_unix_secs) > self.tolerance_secs {
            return Err(SignatureError::StaleTimestamp);
        }
        let claimed = parse_standard_signatures(signatures.as_bytes())?;
        let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
        self.any_secret_matches(|secret| &secret.standard, &signed, &claimed)
    }

    /// Whether the MAC of `parts` under any secret equals any of `claimed`. Every secret and every
    /// claim is compared, in constant time each, whatever matched before.
    fn any_secret_matches(
        &self,
        key_of: impl Fn(&Secret) -> &SigningKey,
        parts: &[&[u8]],
        claimed: &[MacBytes],
    ) -> Result<(), SignatureError> {
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            let expected = key_of(secret).mac_of(parts);
            for candidate in claimed {
                matched |= expected.ct_eq(candidate);
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }
}

/// The value of a header sent exactly once.
pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<&'a HeaderValue, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(SignatureError::Missing)?;
    if values.next().is_some() {
        return Err(SignatureError::Repeated);
    }
    Ok(value)
}

/// 64 hex digits, either case.
fn decode_hex_mac(text: &[u8]) -> Result<MacBytes, SignatureError> {
    let mut mac = [0u8; MAC_LEN];
    hex::decode_to_slice(text, &mut mac).map_err(|_| SignatureError::BadEncoding)?;
    Ok(mac)
}

/// `sha256=` then 64 hex digits.
fn parse_github(value: &HeaderValue) -> Result<MacBytes, SignatureError> {
    let hex = value
        .as_bytes()
        .strip_prefix(GITHUB_PREFIX)
        .ok_or(SignatureError::BadEncoding)?;
    decode_hex_mac(hex)
}

/// Unix seconds as 1 to 19 ASCII digits (no sign, no fraction, no spaces).
fn parse_unix_seconds(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The MACs of the `v1,<base64>` entries of a `webhook-signature` value. Entries of other
/// versions (`v1a`, asymmetric, is not supported) are skipped; a value with no well-formed `v1`
/// entry is a bad encoding.
fn parse_standard_signatures(value: &[u8]) -> Result<Vec<MacBytes>, SignatureError> {
    let macs: Vec<MacBytes> = value
        .split(|&byte| byte == b' ')
        .filter_map(|entry| {
            let (version, encoded) = split_once(entry, b',')?;
            if version != STANDARD_VERSION {
                return None;
            }
            STANDARD.decode(encoded).ok()?.try_into().ok()
        })
        .collect();
    if macs.is_empty() {
        Err(SignatureError::BadEncoding)
    } else {
        Ok(macs)
    }
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&byte| byte == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Signatures as a sender makes them, for the CLI and the tests.
pub mod signer {
    use super::*;

    /// The `X-Hub-Signature-256` value of `body`.
    pub fn github(secret: &str, body: &[u8]) -> String {
        format!("sha256={}", SigningKey::new(secret.as_bytes()).sign(body))
    }

    /// The `v1,<base64>` entry of `webhook-signature` for a message `id` sent at `timestamp`.
    pub fn standard_webhooks(
        secret: &str,
        id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<String, SecretError> {
        let key = Secret::new(secret, "the secret")?.standard;
        Ok(key.sign_standard(id, timestamp, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231, test case 2.
    const KEY: &[u8] = b"Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";
    const DIGEST: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    // The Standard Webhooks test vector, from the specification's reference libraries
    // (github.com/standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py:
    // `test_sign_function`, `test_invalid_signature_raises_error`, `test_multi_sig_payload_is_valid`;
    // the same values are in the JavaScript, Go, Rust and PHP test suites there).
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: u64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const SW_WRONG_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
    const SW_OTHER_ENTRY: &str = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    const SW_OTHER_VERSION: &str = "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";

    fn key(secret: &[u8]) -> SigningKey {
        SigningKey::new(secret)
    }

    fn verifier(current: &str, previous: &[&str]) -> Verifier {
        Verifier::new(current, previous, DEFAULT_TOLERANCE).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn standard_headers(id: &str, timestamp: u64, signature: &str) -> HeaderMap {
        headers(&[
            (STANDARD_ID_HEADER, id),
            (STANDARD_TIMESTAMP_HEADER, &timestamp.to_string()),
            (STANDARD_SIGNATURE_HEADER, signature),
        ])
    }

    fn refusal(scheme: Scheme, error: SignatureError) -> Result<Scheme, Refusal> {
        Err(Refusal {
            scheme: Some(scheme),
            error,
        })
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

    #[test]
    fn the_standard_webhooks_test_vector_signs_and_verifies() {
        let signed = signer::standard_webhooks(SW_SECRET, SW_ID, SW_TIMESTAMP, SW_BODY).unwrap();
        assert_eq!(signed, SW_SIGNATURE);
        let verifier = verifier(SW_SECRET, &[]);
        let request = standard_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);
        assert_eq!(
            verifier.verify(&request, SW_BODY, SW_TIMESTAMP),
            Ok(Scheme::StandardWebhooks)
        );
        let wrong = standard_headers(SW_ID, SW_TIMESTAMP, SW_WRONG_SIGNATURE);
        assert_eq!(
            verifier.verify(&wrong, SW_BODY, SW_TIMESTAMP),
            refusal(Scheme::StandardWebhooks, SignatureError::NoMatch)
        );
    }

    fn svix_headers(id: &str, timestamp: u64, signature: &str) -> HeaderMap {
        headers(&[
            (SVIX_ID_HEADER, id),
            (SVIX_TIMESTAMP_HEADER, &timestamp.to_string()),
            (SVIX_SIGNATURE_HEADER, signature),
        ])
    }

    /// The same vector under Svix's names (the official `svix` library signs it to the same
    /// value; `tests/it/signatures.rs` checks that library's output over HTTP).
    #[test]
    fn svix_headers_carry_the_standard_webhooks_scheme() {
        let verifier = verifier(SW_SECRET, &[]);
        let request = svix_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);
        assert_eq!(verifier.verify(&request, SW_BODY, SW_TIMESTAMP), Ok(Scheme::Svix));
        let wrong = svix_headers(SW_ID, SW_TIMESTAMP, SW_WRONG_SIGNATURE);
        assert_eq!(
            verifier.verify(&wrong, SW_BODY, SW_TIMESTAMP),
            refusal(Scheme::Svix, SignatureError::NoMatch)
        );
        let stale = svix_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);
        assert_eq!(
            verifier.verify(&stale, SW_BODY, SW_TIMESTAMP + 301),
            refusal(Scheme::Svix, SignatureError::StaleTimestamp)
        );
    }

    /// The three headers of one request come from one family: an id under one name and the
    /// signature under the other is missing a header in each.
    #[test]
    fn standard_and_svix_names_do_not_mix() {
        let verifier = verifier(SW_SECRET, &[]);
        let mixed = headers(&[
            (SVIX_ID_HEADER, SW_ID),
            (STANDARD_TIMESTAMP_HEADER, &SW_TIMESTAMP.to_string()),
            (SVIX_SIGNATURE_HEADER, SW_SIGNATURE),
        ]);
        assert_eq!(
            verifier.verify(&mixed, SW_BODY, SW_TIMESTAMP),
            refusal(Scheme::StandardWebhooks, SignatureError::Missing)
        );
        let mut both = svix_headers(SW_ID, SW_TIMESTAMP, SW_WRONG_SIGNATURE);
        both.extend(standard_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE));
        assert_eq!(
            verifier.verify(&both, SW_BODY, SW_TIMESTAMP),
            Ok(Scheme::StandardWebhooks),
            "one family verifying is enough"
        );
    }

    #[test]
    fn any_v1_entry_of_several_may_match_and_other_versions_are_skipped() {
        let verifier = verifier(SW_SECRET, &[]);
        let list = [SW_OTHER_ENTRY, SW_OTHER_VERSION, SW_SIGNATURE, SW_OTHER_ENTRY].join(" ");
        let request = standard_headers(SW_ID, SW_TIMESTAMP, &list);
        assert_eq!(
            verifier.verify(&request, SW_BODY, SW_TIMESTAMP),
            Ok(Scheme::StandardWebhooks)
        );
        let without_match = [SW_OTHER_ENTRY, SW_OTHER_VERSION].join(" ");
        let request = standard_headers(SW_ID, SW_TIMESTAMP, &without_match);
        assert_eq!(
            verifier.verify(&request, SW_BODY, SW_TIMESTAMP),
            refusal(Scheme::StandardWebhooks, SignatureError::NoMatch)
        );
        let only_other_versions = standard_headers(SW_ID, SW_TIMESTAMP, SW_OTHER_VERSION);
        assert_eq!(
            verifier.verify(&only_other_versions, SW_BODY, SW_TIMESTAMP),
            refusal(Scheme::StandardWebhooks, SignatureError::BadEncoding)
        );
    }

    #[test]
    fn the_signed_content_covers_id_timestamp_and_body() {
        let verifier = verifier(SW_SECRET, &[]);
        let other_id = standard_headers("msg_other", SW_TIMESTAMP, SW_SIGNATURE);
        let other_time = standard_headers(SW_ID, SW_TIMESTAMP + 1, SW_SIGNATURE);
        for (request, body) in [
            (other_id, SW_BODY),
            (other_time, SW_BODY),
            (
                standard_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE),
                &br#"{"test": 2432232315}"#[..],
            ),
        ] {
            assert_eq!(
                verifier.verify(&request, body, SW_TIMESTAMP),
                refusal(Scheme::StandardWebhooks, SignatureError::NoMatch)
            );
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_stale_either_way() {
        let verifier = verifier(SW_SECRET, &[]);
        let request = standard_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);
        for now in [SW_TIMESTAMP - 300, SW_TIMESTAMP + 300] {
            assert_eq!(
                verifier.verify(&request, SW_BODY, now),
                Ok(Scheme::StandardWebhooks)
            );
        }
        for now in [SW_TIMESTAMP - 301, SW_TIMESTAMP + 301, 0, u64::MAX] {
            assert_eq!(
                verifier.verify(&request, SW_BODY, now),
                refusal(Scheme::StandardWebhooks, SignatureError::StaleTimestamp),
                "now = {now}"
            );
        }
        let strict = Verifier::new(SW_SECRET, &[], Duration::from_secs(5)).unwrap();
        assert_eq!(
            strict.verify(&request, SW_BODY, SW_TIMESTAMP + 6),
            refusal(Scheme::StandardWebhooks, SignatureError::StaleTimestamp)
        );
    }

    #[test]
    fn malformed_standard_headers_are_named() {
        let verifier = verifier(SW_SECRET, &[]);
        let ts = SW_TIMESTAMP.to_string();
        let cases: Vec<(HeaderMap, SignatureError)> = vec![
            (
                headers(&[(STANDARD_ID_HEADER, SW_ID), (STANDARD_TIMESTAMP_HEADER, &ts)]),
                SignatureError::Missing,
            ),
            (
                headers(&[
                    (STANDARD_ID_HEADER, SW_ID),
                    (STANDARD_SIGNATURE_HEADER, SW_SIGNATURE),
                ]),
                SignatureError::Missing,
            ),
            (
                headers(&[
                    (STANDARD_TIMESTAMP_HEADER, &ts),
                    (STANDARD_SIGNATURE_HEADER, SW_SIGNATURE),
                ]),
                SignatureError::Missing,
            ),
            (
                headers(&[
                    (STANDARD_ID_HEADER, SW_ID),
                    (STANDARD_ID_HEADER, SW_ID),
                    (STANDARD_TIMESTAMP_HEADER, &ts),
                    (STANDARD_SIGNATURE_HEADER, SW_SIGNATURE),
                ]),
                SignatureError::Repeated,
            ),
            (
                headers(&[
                    (STANDARD_ID_HEADER, SW_ID),
                    (STANDARD_TIMESTAMP_HEADER, "hello"),
                    (STANDARD_SIGNATURE_HEADER, SW_SIGNATURE),
                ]),
                SignatureError::BadEncoding,
            ),
            (
                headers(&[
                    (STANDARD_ID_HEADER, SW_ID),
                    (STANDARD_TIMESTAMP_HEADER, "1614265330.0"),
                    (STANDARD_SIGNATURE_HEADER, SW_SIGNATURE),
                ]),
                SignatureError::BadEncoding,
            ),
            (
                headers(&[
                    (STANDARD_ID_HEADER, SW_ID),
                    (STANDARD_TIMESTAMP_HEADER, "-1614265330"),
                    (STANDARD_SIGNATURE_HEADER, SW_SIGNATURE),
                ]),
                SignatureError::BadEncoding,
            ),
            (
                headers(&[
                    (STANDARD_ID_HEADER, SW_ID),
                    (STANDARD_TIMESTAMP_HEADER, "99999999999999999999"),
                    (STANDARD_SIGNATURE_HEADER, SW_SIGNATURE),
                ]),
                SignatureError::BadEncoding,
            ),
            (
                standard_headers(
                    SW_ID,
                    SW_TIMESTAMP,
                    "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                ),
                SignatureError::BadEncoding,
            ),
            (
                standard_headers(SW_ID, SW_TIMESTAMP, "v1,not base64!"),
                SignatureError::BadEncoding,
            ),
            (
                standard_headers(SW_ID, SW_TIMESTAMP, "v1,AAAA"),
                SignatureError::BadEncoding,
            ),
            (
                standard_headers(SW_ID, SW_TIMESTAMP, ""),
                SignatureError::BadEncoding,
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(
                verifier.verify(&request, SW_BODY, SW_TIMESTAMP),
                refusal(Scheme::StandardWebhooks, expected),
                "{request:?}"
            );
        }
    }

    #[test]
    fn a_whsec_secret_is_decoded_for_standard_webhooks_only() {
        // Padded or not, as the reference libraries accept.
        let unpadded = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let decoded = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let verifier = verifier(unpadded, &[]);
        // X-Signature keys with the secret as written, prefix and all.
        let body = b"{}";
        let raw_signature = key(unpadded.as_bytes()).sign(body);
        assert_eq!(
            verifier.verify(&headers(&[(SIGNATURE_HEADER, &raw_signature)]), body, 0),
            Ok(Scheme::XSignature)
        );
        let decoded_signature = key(&decoded).sign(body);
        assert_eq!(
            verifier.verify(&headers(&[(SIGNATURE_HEADER, &decoded_signature)]), body, 0),
            refusal(Scheme::XSignature, SignatureError::NoMatch)
        );
        assert!(Verifier::new("whsec_not*base64", &[], DEFAULT_TOLERANCE).is_err());
        assert!(Verifier::new("whsec_", &[], DEFAULT_TOLERANCE).is_err());
        assert_eq!(
            Verifier::new("ok", &["whsec_???"], DEFAULT_TOLERANCE).err(),
            Some(SecretError::BadStandardSecret {
                setting: "WEBHOOK_SECRET_PREVIOUS"
            })
        );
    }

    #[test]
    fn a_plain_secret_keys_standard_webhooks_as_written() {
        let signature = signer::standard_webhooks("plain secret", "id1", 100, b"body").unwrap();
        let verifier = verifier("plain secret", &[]);
        assert_eq!(
            verifier.verify(&standard_headers("id1", 100, &signature), b"body", 100),
            Ok(Scheme::StandardWebhooks)
        );
    }

    #[test]
    fn github_signatures_need_the_sha256_prefix() {
        let verifier = verifier("s3cret", &[]);
        let body = b"payload";
        let good = signer::github("s3cret", body);
        assert_eq!(
            verifier.verify(&headers(&[(GITHUB_HEADER, &good)]), body, 0),
            Ok(Scheme::GitHub)
        );
        let upper_hex = format!("sha256={}", good["sha256=".len()..].to_uppercase());
        assert_eq!(
            verifier.verify(&headers(&[(GITHUB_HEADER, &upper_hex)]), body, 0),
            Ok(Scheme::GitHub)
        );
        for (value, error) in [
            (good["sha256=".len()..].to_owned(), SignatureError::BadEncoding),
            (
                format!("sha1={}", &good["sha256=".len()..]),
                SignatureError::BadEncoding,
            ),
            (
                format!("SHA256={}", &good["sha256=".len()..]),
                SignatureError::BadEncoding,
            ),
            (format!("{good}0"), SignatureError::BadEncoding),
            (signer::github("other", body), SignatureError::NoMatch),
        ] {
            assert_eq!(
                verifier.verify(&headers(&[(GITHUB_HEADER, &value)]), body, 0),
                refusal(Scheme::GitHub, error),
                "{value}"
            );
        }
        let twice = headers(&[(GITHUB_HEADER, &good), (GITHUB_HEADER, &good)]);
        assert_eq!(
            verifier.verify(&twice, body, 0),
            refusal(Scheme::GitHub, SignatureError::Repeated)
        );
    }

    #[test]
    fn previous_secrets_split_on_commas_that_are_not_escaped() {
        let split = |list: &str| Verifier::split_previous(list, "WEBHOOK_SECRET_PREVIOUS");
        assert_eq!(
            split(" old-1 , old-2 "),
            Ok(vec!["old-1".to_owned(), "old-2".to_owned()])
        );
        assert_eq!(split(r"a\,b,c"), Ok(vec!["a,b".to_owned(), "c".to_owned()]));
        assert_eq!(
            split(r"ends\\,next"),
            Ok(vec![r"ends\".to_owned(), "next".to_owned()])
        );
        assert_eq!(split(r"back\slash"), Ok(vec![r"back\slash".to_owned()]));
        assert_eq!(split(""), Ok(vec![]));
        assert_eq!(split("   "), Ok(vec![]));
        for bad in ["a,,b", "a,", ",a", "a, ,b", ","] {
            assert_eq!(
                split(bad),
                Err(SecretError::EmptyPrevious {
                    setting: "WEBHOOK_SECRET_PREVIOUS"
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn previous_secrets_are_accepted_in_every_scheme_and_others_are_not() {
        let previous = Verifier::split_previous(" old-1 , old-2 ", "WEBHOOK_SECRET_PREVIOUS").unwrap();
        assert_eq!(previous, ["old-1", "old-2"]);
        let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
        let verifier = verifier("new", &previous);
        let body = b"body";
        for secret in ["new", "old-1", "old-2"] {
            let x = key(secret.as_bytes()).sign(body);
            assert_eq!(
                verifier.verify(&headers(&[(SIGNATURE_HEADER, &x)]), body, 0),
                Ok(Scheme::XSignature),
                "{secret}"
            );
            let github = signer::github(secret, body);
            assert_eq!(
                verifier.verify(&headers(&[(GITHUB_HEADER, &github)]), body, 0),
                Ok(Scheme::GitHub)
            );
            let standard = signer::standard_webhooks(secret, "id", 50, body).unwrap();
            assert_eq!(
                verifier.verify(&standard_headers("id", 50, &standard), body, 50),
                Ok(Scheme::StandardWebhooks)
            );
        }
        let retired = key(b"old-0").sign(body);
        assert_eq!(
            verifier.verify(&headers(&[(SIGNATURE_HEADER, &retired)]), body, 0),
            refusal(Scheme::XSignature, SignatureError::NoMatch)
        );
    }

    #[test]
    fn one_valid_scheme_is_enough_and_a_refusal_names_the_first_scheme_tried() {
        let verifier = verifier("s", &[]);
        let body = b"b";
        let good_x = key(b"s").sign(body);
        let bad_github = signer::github("wrong", body);
        let both = headers(&[(SIGNATURE_HEADER, &good_x), (GITHUB_HEADER, &bad_github)]);
        assert_eq!(verifier.verify(&both, body, 0), Ok(Scheme::XSignature));
        let bad_x = key(b"wrong").sign(body);
        let neither = headers(&[(SIGNATURE_HEADER, &bad_x), (GITHUB_HEADER, &bad_github)]);
        assert_eq!(
            verifier.verify(&neither, body, 0),
            refusal(Scheme::GitHub, SignatureError::NoMatch)
        );
        assert_eq!(
            verifier.verify(&HeaderMap::new(), body, 0),
            Err(Refusal {
                scheme: None,
                error: SignatureError::Missing
            })
        );
        // One Standard Webhooks header alone claims that scheme, and the others are missing.
        assert_eq!(
            verifier.verify(&headers(&[(STANDARD_ID_HEADER, "x")]), body, 0),
            refusal(Scheme::StandardWebhooks, SignatureError::Missing)
        );
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let verifier = verifier("hunter2", &["hunter3"]);
        let shown = format!("{verifier:?} {:?}", key(b"hunter2"));
        assert!(!shown.contains("hunter"), "{shown}");
    }
}
