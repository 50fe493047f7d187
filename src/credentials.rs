//! Who may write and who may read: the signature verifier of `/webhook` and the bearer token of
//! the read endpoints.
//!
//! The token is kept only as its SHA-256 digest, and a presented token is hashed and compared
//! with it in constant time: the time taken tells neither how much of a guess was right nor how
//! long the token is.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ServeArgs;
use crate::signature::{SecretError, Verifier};

/// Who may write and who may read.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Checks `/webhook` signatures; `None` when `WEBHOOK_SECRET` is unset (`/webhook` then
    /// answers 503).
    pub verifier: Option<Verifier>,
    /// Required on the read endpoints; `None` when `API_TOKEN` is unset (reads are open).
    pub api_token: Option<ApiToken>,
}

/// Secrets and tokens shorter than this are accepted (the original evaluator's secret is
/// `testsecret`) but warned about at start-up: they can be guessed offline from one signed body.
pub const MIN_SECRET_BYTES: usize = 16;

impl Credentials {
    /// The verifier and the token the settings ask for; an empty setting counts as unset. Each
    /// secret or token shorter than [`MIN_SECRET_BYTES`] is warned about (never shown).
    pub fn from_args(args: &ServeArgs) -> Result<Credentials, SecretError> {
        let previous = args
            .webhook_secret_previous
            .as_deref()
            .map(|list| Verifier::split_previous(list, "WEBHOOK_SECRET_PREVIOUS"))
            .transpose()?
            .unwrap_or_default();
        let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
        let tolerance = Duration::from_secs(args.webhook_tolerance_secs);
        let secret = args.webhook_secret.as_deref().filter(|secret| !secret.is_empty());
        let verifier = secret
            .map(|secret| Verifier::new(secret, &previous, tolerance))
            .transpose()?;
        let api_token = args.api_token.as_deref().filter(|token| !token.is_empty());
        warn_if_short("WEBHOOK_SECRET", secret.into_iter());
        if secret.is_some() {
            warn_if_short("WEBHOOK_SECRET_PREVIOUS", previous.iter().copied());
        }
        warn_if_short("API_TOKEN", api_token.into_iter());
        Ok(Credentials {
            verifier,
            api_token: api_token.and_then(ApiToken::new),
        })
    }
}

pub(crate) fn warn_if_short<'a>(setting: &'static str, values: impl Iterator<Item = &'a str>) {
    for value in values.filter(|value| value.len() < MIN_SECRET_BYTES) {
        tracing::warn!(
            setting,
            bytes = value.len(),
            minimum = MIN_SECRET_BYTES,
            "a secret shorter than 16 bytes can be guessed from one signed request; use a longer one"
        );
    }
}

const BEARER: &[u8] = b"bearer";

/// The token that read endpoints require.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl ApiToken {
    /// `None` for an empty token, which (like an unset one) leaves reads open.
    pub fn new(token: &str) -> Option<ApiToken> {
        (!token.is_empty()).then(|| ApiToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `headers` carry exactly one `Authorization: Bearer <this token>`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        bearer_token(headers).is_some_and(|presented| {
            let digest: [u8; 32] = Sha256::digest(presented).into();
            bool::from(digest.ct_eq(&self.digest))
        })
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

/// The token of the only `Authorization` header, when its scheme is `Bearer` (in any case,
/// RFC 9110 §11.1) followed by one or more spaces.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    let scheme = value.get(..BEARER.len())?;
    let rest = value.get(BEARER.len()..)?;
    if !scheme.eq_ignore_ascii_case(BEARER) || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_the_bearer_token_is_admitted() {
        let token = ApiToken::new("s3cr3t-token").unwrap();
        for good in [
            &b"Bearer s3cr3t-token"[..],
            b"bearer s3cr3t-token",
            b"BEARER   s3cr3t-token",
        ] {
            assert!(token.admits(&with_authorization(&[good])), "{good:?}");
        }
        for bad in [
            &b"Bearer s3cr3t-toke"[..],
            b"Bearer s3cr3t-token2",
            b"Bearer S3CR3T-TOKEN",
            b"Bearers3cr3t-token",
            b"Bearer",
            b"Bearer ",
            b"Basic s3cr3t-token",
            b"Token s3cr3t-token",
            b"s3cr3t-token",
            b"",
            b"Bearer s3cr3t-token\xff",
        ] {
            assert!(!token.admits(&with_authorization(&[bad])), "{bad:?}");
        }
        assert!(!token.admits(&HeaderMap::new()));
        let twice = with_authorization(&[b"Bearer s3cr3t-token", b"Bearer s3cr3t-token"]);
        assert!(!token.admits(&twice), "a repeated header is refused");
    }

    #[test]
    fn an_empty_token_protects_nothing_and_is_never_shown() {
        assert!(ApiToken::new("").is_none());
        let shown = format!("{:?}", ApiToken::new("hunter2").unwrap());
        assert!(!shown.contains("hunter2"));
    }
}
