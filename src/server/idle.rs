//! A connection that moves no byte for too long is closed: a client that stops reading its
//! answer, or holds an HTTP/2 connection open without using it, would otherwise keep its
//! connection slot forever. (HTTP/1.1 clients that send nothing are cut off sooner by hyper's
//! header read timeout.)
//!
//! Before hyper parses anything, its connection builder reads the first bytes to tell HTTP/2
//! from HTTP/1.1, and no hyper timer runs during that read: the opening bytes therefore get a
//! deadline of their own here (the header read timeout), so that a client that connects and
//! says nothing is not kept until the idle timeout.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How many bytes hyper reads to recognise the HTTP/2 connection preface.
pub const OPENING_BYTES: usize = 24;

pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    last_progress: Instant,
    /// Until the opening bytes have arrived (or the server has written), they must arrive by then.
    opening_deadline: Option<Instant>,
    opening_bytes_left: usize,
    /// Woken at the earliest moment the connection could be idle too long; moved forward lazily,
    /// when it fires, rather than on every read and write.
    alarm: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    /// `inner`, closed after `idle` without a byte moving, or if its first [`OPENING_BYTES`]
    /// have not arrived within `opening`.
    pub fn new(inner: S, idle: Duration, opening: Duration) -> Self {
        let now = Instant::now();
        let opening_deadline = now + opening;
        IdleTimeout {
            inner,
            timeout: idle,
            last_progress: now,
            opening_deadline: Some(opening_deadline),
            opening_bytes_left: OPENING_BYTES,
            alarm: Box::pin(tokio::time::sleep_until(opening_deadline.min(now + idle))),
        }
    }

    fn read_progressed(&mut self, count: usize) {
        self.last_progress = Instant::now();
        self.opening_bytes_left = self.opening_bytes_left.saturating_sub(count);
        if self.opening_bytes_left == 0 {
            self.opening_deadline = None;
        }
    }

    fn write_progressed(&mut self) {
        self.last_progress = Instant::now();
        // The server answers only once the protocol is known.
        self.opening_deadline = None;
    }

    /// Called when the inner stream would wait: an error once a deadline has passed, else
    /// waiting (with the alarm set to wake this task in time).
    fn wait_or_time_out<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            let idle_until = self.last_progress + self.timeout;
            let give_up_at = self
                .opening_deadline
                .map_or(idle_until, |opening| opening.min(idle_until));
            if Instant::now() >= give_up_at {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing, or nothing moved, for too long",
                )));
            }
            if self.alarm.deadline() != give_up_at {
                self.alarm.as_mut().reset(give_up_at);
            }
            match self.alarm.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Fired between the check above and now: look again.
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => this.wait_or_time_out(cx),
            Poll::Ready(Ok(())) => {
                let count = buf.filled().len() - before;
                if count > 0 {
                    this.read_progressed(count);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.wait_or_time_out(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.wait_or_time_out(cx),
            ready => ready,
        }
    }
}

impl<S> IdleTimeout<S> {
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Pending => self.wait_or_time_out(cx),
            Poll::Ready(Ok(count)) => {
                if count > 0 {
                    self.write_progressed();
                }
                Poll::Ready(Ok(count))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5), Duration::from_secs(5));
        let mut client = client;
        client.write_all(&[b'x'; OPENING_BYTES]).await.unwrap();
        server.read_exact(&mut [0u8; OPENING_BYTES]).await.unwrap();
        let mut byte = [0u8; 1];
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(4)).await;
            client.write_all(b"x").await.unwrap();
            server.read_exact(&mut byte).await.unwrap();
        }
        let error = server.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn the_opening_bytes_have_a_deadline_of_their_own() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(60), Duration::from_secs(2));
        let mut received = [0u8; OPENING_BYTES];
        // A byte a second keeps the idle timer happy but misses the opening deadline.
        let trickle = async {
            for _ in 0..OPENING_BYTES {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(b"x").await.is_err() {
                    break;
                }
            }
        };
        let (read, ()) = tokio::join!(server.read_exact(&mut received), trickle);
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out_the_writer() {
        let (_client, server) = tokio::io::duplex(16);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5), Duration::from_secs(5));
        let error = server.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
