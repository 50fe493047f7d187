//! Where messages come from besides `POST /webhook` (docs/providers.md): each messaging provider is one
//! folder holding its route, its verifier and its normalizer into the one [`Message`] model.
//! A provider whose secrets are unset has no route (404) and no say in readiness. This module
//! builds the providers from the settings (for the application state); the HTTP layer mounts
//! the routes of those configured.
//!
//! [`Message`]: crate::message::Message

pub mod twilio;
pub mod whatsapp;

use std::sync::Arc;

use crate::config::ProviderArgs;
use crate::signature::{SecretError, Verifier};

/// The providers the settings configure.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    pub whatsapp: Option<Arc<whatsapp::WhatsappSource>>,
    pub twilio: Option<Arc<twilio::TwilioSource>>,
}

/// Why the providers' settings cannot be used; each is one line.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "{missing} must be set with {given} (Meta's subscription handshake needs the one, its signatures the other)"
    )]
    WhatsappHalfConfigured {
        given: &'static str,
        missing: &'static str,
    },
    #[error(
        "PUBLIC_URL must be set with TWILIO_AUTH_TOKEN: Twilio signs the URL it called (for example PUBLIC_URL=https://inbox.example.com)"
    )]
    PublicUrlMissing,
    #[error(
        "PUBLIC_URL must be an absolute http:// or https:// URL without query or fragment, such as https://inbox.example.com (got {0:?})"
    )]
    PublicUrlInvalid(String),
    #[error("{0}")]
    Secret(#[from] SecretError),
}

impl Providers {
    /// The providers `args` configure; an empty setting counts as unset.
    pub fn from_args(args: &ProviderArgs) -> Result<Providers, ProviderError> {
        Ok(Providers {
            whatsapp: whatsapp_from_args(args)?.map(Arc::new),
            twilio: twilio_from_args(args)?.map(Arc::new),
        })
    }
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

fn whatsapp_from_args(args: &ProviderArgs) -> Result<Option<whatsapp::WhatsappSource>, ProviderError> {
    let (secret, token) = match (set(&args.whatsapp_app_secret), set(&args.whatsapp_verify_token)) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(ProviderError::WhatsappHalfConfigured {
                given: "WHATSAPP_APP_SECRET",
                missing: "WHATSAPP_VERIFY_TOKEN",
            });
        }
        (None, Some(_)) => {
            return Err(ProviderError::WhatsappHalfConfigured {
                given: "WHATSAPP_VERIFY_TOKEN",
                missing: "WHATSAPP_APP_SECRET",
            });
        }
        (Some(secret), Some(token)) => (secret, token),
    };
    let previous = previous_secrets(&args.whatsapp_app_secret_previous, "WHATSAPP_APP_SECRET_PREVIOUS")?;
    let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
    crate::credentials::warn_if_short("WHATSAPP_APP_SECRET", std::iter::once(secret));
    crate::credentials::warn_if_short("WHATSAPP_VERIFY_TOKEN", std::iter::once(token));
    Ok(Some(whatsapp::WhatsappSource::new(secret, &previous, token)?))
}

fn twilio_from_args(args: &ProviderArgs) -> Result<Option<twilio::TwilioSource>, ProviderError> {
    let Some(token) = set(&args.twilio_auth_token) else {
        return Ok(None);
    };
    let public_url = set(&args.public_url).ok_or(ProviderError::PublicUrlMissing)?;
    let public_url = check_public_url(public_url)?;
    let previous = previous_secrets(&args.twilio_auth_token_previous, "TWILIO_AUTH_TOKEN_PREVIOUS")?;
    crate::credentials::warn_if_short("TWILIO_AUTH_TOKEN", std::iter::once(token));
    Ok(Some(twilio::TwilioSource::new(
        token,
        previous.iter().map(String::as_str),
        public_url,
    )))
}

fn previous_secrets(list: &Option<String>, setting: &'static str) -> Result<Vec<String>, SecretError> {
    set(list)
        .map(|list| Verifier::split_previous(list, setting))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// `http(s)://host[:port][/prefix]`, without a trailing `/`, as the base of the URLs a provider
/// calls.
fn check_public_url(url: &str) -> Result<String, ProviderError> {
    let invalid = || ProviderError::PublicUrlInvalid(url.to_owned());
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(invalid)?;
    let host = rest.split('/').next().unwrap_or_default();
    let usable = !host.is_empty()
        && !url.contains(['?', '#'])
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !usable {
        return Err(invalid());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_is_an_absolute_http_url_without_query_or_fragment() {
        for (given, kept) in [
            ("https://inbox.example.com", "https://inbox.example.com"),
            ("https://inbox.example.com/", "https://inbox.example.com"),
            ("http://10.0.0.5:8000/hooks/", "http://10.0.0.5:8000/hooks"),
        ] {
            assert_eq!(check_public_url(given).expect(given), kept);
        }
        for bad in [
            "inbox.example.com",
            "ftp://inbox.example.com",
            "https://",
            "https:///path",
            "https://inbox.example.com/?a=1",
            "https://inbox.example.com/#top",
            "https://inbox example.com",
        ] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn half_a_whatsapp_configuration_and_twilio_without_a_public_url_are_refused() {
        let whatsapp_secret_only = ProviderArgs {
            whatsapp_app_secret: Some("app-secret-of-32-characters-long".to_owned()),
            ..ProviderArgs::default()
        };
        assert!(matches!(
            Providers::from_args(&whatsapp_secret_only),
            Err(ProviderError::WhatsappHalfConfigured {
                missing: "WHATSAPP_VERIFY_TOKEN",
                ..
            })
        ));
        let token_only = ProviderArgs {
            whatsapp_verify_token: Some("verify-token".to_owned()),
            ..ProviderArgs::default()
        };
        assert!(matches!(
            Providers::from_args(&token_only),
            Err(ProviderError::WhatsappHalfConfigured {
                missing: "WHATSAPP_APP_SECRET",
                ..
            })
        ));
        let twilio_alone = ProviderArgs {
            twilio_auth_token: Some("auth-token".to_owned()),
            ..ProviderArgs::default()
        };
        let refusal = Providers::from_args(&twilio_alone)
            .expect_err("refused")
            .to_string();
        assert!(refusal.starts_with("PUBLIC_URL must be set"), "{refusal}");
        assert!(!refusal.contains('\n'));
        let none = Providers::from_args(&ProviderArgs {
            whatsapp_app_secret: Some(String::new()),
            twilio_auth_token: Some(String::new()),
            ..ProviderArgs::default()
        })
        .expect("empty settings are unset");
        assert!(none.whatsapp.is_none() && none.twilio.is_none());
    }
}
