//! Other replicas' commits, heard through `LISTEN`/`NOTIFY`: the trigger that counts each
//! insert statement's rows also announces the last position it stored (schema v6), and
//! PostgreSQL delivers the announcements in commit order once their transactions commit. One
//! connection of its own listens, outside the pools, and reconnects when it is lost; after each
//! (re)connection it nudges the followers to read, since announcements made while it was away
//! are not replayed. An announcement only says when to read: followers read by position, so a
//! lost one delays them and loses nothing.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::NoTls;
use tokio_postgres::{AsyncMessage, Client, Config, Connection};

use super::connection::describe;
use super::tls::Tls;
use crate::store::ArrivalSignal;

/// The channel the insert trigger announces on (`schema`'s `V6_HOURS_AND_ANNOUNCEMENTS`).
#[cfg(test)]
const CHANNEL: &str = "webhook_inbox_arrivals";

/// `LISTEN` takes no parameters: the statement is written out whole.
const LISTEN: &str = "LISTEN webhook_inbox_arrivals";

/// How long to wait before connecting again after the listening connection was lost.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Listens until aborted, raising `arrivals` with every announced position.
pub fn start(config: Config, tls: Tls, arrivals: ArrivalSignal) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            let ended = match &tls {
                Tls::Plain => match config.connect(NoTls).await {
                    Ok((client, connection)) => listen(client, connection, &arrivals).await,
                    Err(error) => Err(error),
                },
                Tls::Rustls(connector) => match config.connect(connector.clone()).await {
                    Ok((client, connection)) => listen(client, connection, &arrivals).await,
                    Err(error) => Err(error),
                },
            };
            if let Err(error) = ended {
                tracing::warn!(error = %describe(&error), "lost the connection that hears other replicas' commits; reconnecting");
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    })
    .abort_handle()
}

/// Subscribes on `client` and passes on every announcement for this connection's schema,
/// until the connection ends.
async fn listen<S, T>(
    client: Client,
    mut connection: Connection<S, T>,
    arrivals: &ArrivalSignal,
) -> Result<(), tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let subscribe = async {
        let schema: Option<String> = client.query_one("SELECT current_schema()", &[]).await?.get(0);
        client.batch_execute(LISTEN).await?;
        Ok::<_, tokio_postgres::Error>(schema.unwrap_or_default())
    };
    tokio::pin!(subscribe);
    let mut schema = None;
    loop {
        tokio::select! {
            subscribed = &mut subscribe, if schema.is_none() => {
                schema = Some(subscribed?);
                arrivals.nudge();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if let Some(position) = announced_position(notification.payload(), schema.as_deref()) {
                        arrivals.committed(position);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
        }
    }
}

/// The position an announcement (`<schema> <position>`) makes known, when it is for `schema`.
fn announced_position(payload: &str, schema: Option<&str>) -> Option<u64> {
    let (announced_schema, position) = payload.rsplit_once(' ')?;
    if Some(announced_schema) != schema {
        return None;
    }
    position.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listener_and_the_trigger_name_one_channel() {
        assert_eq!(super::LISTEN, format!("LISTEN {}", super::CHANNEL));
        let trigger = super::super::schema::announcing_trigger();
        assert!(trigger.contains(&format!("pg_notify('{}'", super::CHANNEL)));
    }

    #[test]
    fn only_announcements_for_this_schema_count() {
        use super::announced_position;
        assert_eq!(announced_position("inbox 42", Some("inbox")), Some(42));
        assert_eq!(announced_position("my schema 7", Some("my schema")), Some(7));
        assert_eq!(announced_position("other 42", Some("inbox")), None);
        assert_eq!(announced_position("inbox 42", None), None);
        assert_eq!(announced_position("inbox x", Some("inbox")), None);
        assert_eq!(announced_position("42", Some("inbox")), None);
    }
}
