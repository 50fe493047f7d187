//! WhatsApp Business Cloud API (Meta) as a source (docs/providers.md):
//!
//! - `verify`: the subscription handshake's token and the app secret's `X-Hub-Signature-256`;
//! - `normalize`: a notification into messages;
//! - `route`: `GET` (the handshake) and `POST` (notifications) on [`PATH`].

mod normalize;
pub mod route;
mod verify;

pub use normalize::{Notification, normalize};
pub use route::{PATH, router};
pub use verify::WhatsappSource;
