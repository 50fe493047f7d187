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

/// Subscribes on `client` and passes every announcement on, until the connection ends.
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
    let subscribe = client.batch_execute(LISTEN);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            done = &mut subscribe, if !subscribed => {
                done?;
                subscribed = true;
                arrivals.nudge();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    match notification.payload().parse::<u64>() {
                        Ok(position) => arrivals.committed(position),
                        Err(_) => arrivals.nudge(),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listener_and_the_trigger_name_one_channel() {
        assert_eq!(super::LISTEN, format!("LISTEN {}", super::CHANNEL));
        let trigger = super::super::schema::announcing_trigger();
        assert!(trigger.contains(&format!("pg_notify('{}'", super::CHANNEL)));
    }
}
