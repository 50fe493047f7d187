//! Twilio Messaging (SMS, MMS, and WhatsApp through Twilio) as a source (docs/providers.md):
//!
//! - `verify`: `X-Twilio-Signature`, over the URL Twilio called and its form fields;
//! - `normalize`: the form fields into a message;
//! - `route`: `POST` on [`PATH`], answered with empty TwiML.

mod normalize;
pub mod route;
mod verify;

pub use normalize::normalize;
pub use route::{PATH, router};
pub use verify::{TWILIO_SIGNATURE_HEADER, TwilioSource, TwilioVerifier, sign};
