//! `--forward-to`: each message's JSON POSTed to a local URL, for development.
//!
//! Once per message and in order, waiting for each answer, with no retries: a receiver that is
//! down or answers an error is reported on stderr and the message is not sent again. Waiting
//! keeps the order; a slow receiver slows the tail, and if it falls too far behind the service
//! closes the stream, which the tail resumes from its last id without losing a message.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::CONTENT_TYPE;

use super::error::{TailError, root_cause};
use super::print::status;

/// How long one delivery may take, connection and answer included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Forwarder {
    client: reqwest::Client,
    url: Url,
}

impl Forwarder {
    pub fn new(url: Url) -> Result<Forwarder, TailError> {
        let client = crate::outbound::client_builder()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(TailError::Client)?;
        Ok(Forwarder { client, url })
    }

    /// POSTs `data` (the message's JSON as the stream sent it) and reports the answer's status,
    /// or why there was none, on stderr.
    pub async fn forward(&self, data: &str, message_id: &str) {
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(data.to_owned())
            .send()
            .await;
        match sent {
            Ok(answer) => status(&format!("{message_id} -> {}", answer.status())),
            Err(error) => status(&format!(
                "{message_id} -> not delivered to {} (not retried): {}",
                self.url,
                root_cause(&error)
            )),
        }
    }
}
