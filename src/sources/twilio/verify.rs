//! Twilio's `X-Twilio-Signature`: the base64 of an HMAC-SHA1, keyed with the account's auth
//! token, over the full URL Twilio called followed by every POST parameter's name and value,
//! sorted by name. As Twilio's own libraries compute it, a name sent more than once contributes
//! each distinct value once, in sorted order; and since Twilio signs a URL with an explicit port
//! in some cases and without it in others, both forms are tried (`:443` or `:80` added when the URL
//! has no port, the port removed when it has one).
//!
//! Every accepted token and both forms of the URL are tried, each compared in constant time,
//! whatever matched before, as the other schemes do.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::{Choice, ConstantTimeEq};

use axum::http::HeaderMap;

use crate::signature::{SignatureError, single_header};

type HmacSha1 = Hmac<Sha1>;

pub const TWILIO_SIGNATURE_HEADER: &str = "x-twilio-signature";

const MAC_LEN: usize = 20;

/// Checks `X-Twilio-Signature` against the current auth token and any previous ones.
#[derive(Clone)]
pub struct TwilioVerifier {
    tokens: Vec<HmacSha1>,
}

impl TwilioVerifier {
    pub fn new<'a>(current: &'a str, previous: impl IntoIterator<Item = &'a str>) -> TwilioVerifier {
        let tokens = std::iter::once(current)
            .chain(previous)
            .map(|token| keyed(token.as_bytes()))
            .collect();
        TwilioVerifier { tokens }
    }

    /// Whether `headers` carry a signature of `url` and `params` (the decoded form fields, in the
    /// order received) made with an accepted token.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        url: &str,
        params: &[(String, String)],
    ) -> Result<(), SignatureError> {
        let claimed = single_header(headers, TWILIO_SIGNATURE_HEADER)?;
        let claimed: [u8; MAC_LEN] = STANDARD
            .decode(claimed.as_bytes())
            .ok()
            .and_then(|mac| mac.try_into().ok())
            .ok_or(SignatureError::BadEncoding)?;
        let mut matched = Choice::from(0);
        for form in url_forms(url) {
            let content = signed_content(&form, params);
            for token in &self.tokens {
                let expected = mac(token, &content);
                matched |= expected.as_slice().ct_eq(&claimed);
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }
}

/// A configured Twilio source: its auth tokens, and the public URL Twilio calls the service at.
#[derive(Clone)]
pub struct TwilioSource {
    pub verifier: TwilioVerifier,
    /// `http(s)://host[:port][/prefix]`, no trailing `/`.
    pub public_url: String,
}

impl std::fmt::Debug for TwilioSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TwilioSource({}, ..)", self.public_url)
    }
}

impl TwilioSource {
    pub fn new<'a>(
        token: &'a str,
        previous: impl IntoIterator<Item = &'a str>,
        public_url: String,
    ) -> TwilioSource {
        TwilioSource {
            verifier: TwilioVerifier::new(token, previous),
            public_url,
        }
    }

    /// The URL Twilio called for `path_and_query`, as it signed it.
    pub fn called_url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public_url)
    }
}

/// The `X-Twilio-Signature` Twilio sends for `url` and `params`, for the CLI and the tests.
pub fn sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(&keyed(token.as_bytes()), &signed_content(url, params)))
}

fn keyed(token: &[u8]) -> HmacSha1 {
    // HMAC accepts keys of any length (long ones are hashed first), so this cannot fail.
    <HmacSha1 as KeyInit>::new_from_slice(token)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

fn mac(keyed: &HmacSha1, content: &[u8]) -> Vec<u8> {
    let mut mac = keyed.clone();
    mac.update(content);
    mac.finalize().into_bytes().to_vec()
}

/// The URL, then each distinct parameter pair's name and value, sorted by name, then value.
fn signed_content(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let pairs: BTreeSet<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut content = url.as_bytes().to_vec();
    for (name, value) in pairs {
        content.extend_from_slice(name.as_bytes());
        content.extend_from_slice(value.as_bytes());
    }
    content
}

/// `url` as given, and with its port made explicit (the scheme's default) or removed.
fn url_forms(url: &str) -> [String; 2] {
    let other = match split_authority(url) {
        Some((start, authority, rest)) => match authority.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()) => {
                format!("{start}{host}{rest}")
            }
            _ => {
                let port = if start.starts_with("https") { 443 } else { 80 };
                format!("{start}{authority}:{port}{rest}")
            }
        },
        None => url.to_owned(),
    };
    [url.to_owned(), other]
}

/// `scheme://`, the authority (host and port, without user info), and the rest of `url`.
fn split_authority(url: &str) -> Option<(&str, &str, &str)> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| after_scheme + at);
    Some((&url[..after_scheme], &url[after_scheme..end], &url[end..]))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    // Twilio's own test of its signature, in its Python library (twilio-python,
    // tests/unit/test_request_validator.py: `setUp`, `test_compute_signature`,
    // `test_compute_signature_duplicate_multi_dict`, `test_validation_removes_port_on_http`).
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const EXPECTED: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const DUPLICATES_EXPECTED: &str = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
    const HTTP_WITH_PORT_EXPECTED: &str = "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn twilios_params() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ])
    }

    fn signed(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TWILIO_SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        headers
    }

    #[test]
    fn signs_twilios_example_as_twilio_does() {
        assert_eq!(sign(TOKEN, URL, &twilios_params()), EXPECTED);
        let duplicates = params(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(sign(TOKEN, URL, &duplicates), DUPLICATES_EXPECTED);
    }

    #[test]
    fn verifies_twilios_example_with_and_without_the_port() {
        let verifier = TwilioVerifier::new(TOKEN, []);
        let request = signed(EXPECTED);
        assert_eq!(verifier.verify(&request, URL, &twilios_params()), Ok(()));
        let with_port = URL.replace(".com", ".com:1234");
        assert_eq!(verifier.verify(&request, &with_port, &twilios_params()), Ok(()));
        let http_with_port = with_port.replace("https", "http");
        assert_eq!(
            verifier.verify(
                &signed(HTTP_WITH_PORT_EXPECTED),
                &http_with_port,
                &twilios_params()
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_another_url_parameter_token_or_encoding() {
        let verifier = TwilioVerifier::new(TOKEN, []);
        let request = signed(EXPECTED);
        let mut changed = twilios_params();
        changed[1].1 = "1235".to_owned();
        assert_eq!(
            verifier.verify(&request, URL, &changed),
            Err(SignatureError::NoMatch)
        );
        let mut added = twilios_params();
        added.push(("Body".to_owned(), "hello".to_owned()));
        assert_eq!(
            verifier.verify(&request, URL, &added),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verifier.verify(
                &request,
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &twilios_params()
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            TwilioVerifier::new("54321", []).verify(&request, URL, &twilios_params()),
            Err(SignatureError::NoMatch)
        );
        for bad in [
            "",
            "RSOYDt4T1cUTdK1PDd93",
            "not base64!",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=AAAA",
        ] {
            assert_eq!(
                verifier.verify(&signed(bad), URL, &twilios_params()),
                Err(SignatureError::BadEncoding),
                "{bad:?}"
            );
        }
        assert_eq!(
            verifier.verify(&HeaderMap::new(), URL, &twilios_params()),
            Err(SignatureError::Missing)
        );
        let mut twice = signed(EXPECTED);
        twice.append(TWILIO_SIGNATURE_HEADER, HeaderValue::from_static(EXPECTED));
        assert_eq!(
            verifier.verify(&twice, URL, &twilios_params()),
            Err(SignatureError::Repeated)
        );
    }

    #[test]
    fn a_previous_token_is_accepted_while_it_is_listed() {
        let request = signed(EXPECTED);
        let rotating = TwilioVerifier::new("new-token", ["older", TOKEN]);
        assert_eq!(rotating.verify(&request, URL, &twilios_params()), Ok(()));
        let rotated = TwilioVerifier::new("new-token", ["older"]);
        assert_eq!(
            rotated.verify(&request, URL, &twilios_params()),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn the_port_forms_of_a_url() {
        assert_eq!(
            url_forms("https://example.com/sms?x=1"),
            ["https://example.com/sms?x=1", "https://example.com:443/sms?x=1"]
        );
        assert_eq!(
            url_forms("http://example.com:8080/sms"),
            ["http://example.com:8080/sms", "http://example.com/sms"]
        );
        assert_eq!(
            url_forms("http://example.com"),
            ["http://example.com", "http://example.com:80"]
        );
        assert_eq!(url_forms("no scheme"), ["no scheme", "no scheme"]);
    }

    proptest! {
        /// Any fields, in any order: what `sign` makes verifies, whatever the order the fields
        /// arrive in, and changing any value breaks it.
        #[test]
        fn signatures_verify_in_any_field_order_and_break_on_any_change(
            token in "[ -~]{1,40}",
            path in "/[a-z/]{0,20}",
            mut fields in proptest::collection::vec(("[A-Za-z]{1,12}", "[ -~]{0,30}"), 1..12),
            rotate in 0usize..12,
        ) {
            let url = format!("https://inbox.example{path}");
            let signature = sign(&token, &url, &fields);
            let verifier = TwilioVerifier::new(&token, []);
            let len = fields.len();
            fields.rotate_left(rotate % len);
            prop_assert_eq!(verifier.verify(&signed(&signature), &url, &fields), Ok(()));
            // A character no generated value holds, so the changed pair is new to the set.
            fields[0].1.push('\u{7f}');
            prop_assert_eq!(verifier.verify(&signed(&signature), &url, &fields), Err(SignatureError::NoMatch));
        }
    }
}
