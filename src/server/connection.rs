//! Limits on the endpoint's connections: at most `max_connections` open at once (one more
//! is closed as soon as it is accepted), and a connection on which the client sends nothing
//! for `idle_timeout` while the server waits to read is closed. Owns the TCP side only; what
//! is inside a request (its body, its time) is the handler's business.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// An acceptor that admits at most as many connections as its semaphore has permits, and
/// gives each admitted stream an idle timeout.
#[derive(Clone)]
pub struct ConnectionLimit {
    open: Arc<Semaphore>,
    idle_timeout: Duration,
    refused: Counter,
}

impl ConnectionLimit {
    /// Admits `max_connections` at once, counting those it closes in `refused`; closes one
    /// idle for `idle_timeout`.
    pub fn new(
        max_connections: usize,
        idle_timeout: Duration,
        refused: Counter,
    ) -> ConnectionLimit {
        ConnectionLimit {
            open: Arc::new(Semaphore::new(max_connections.max(1))),
            idle_timeout,
            refused,
        }
    }
}

impl<I, S> Accept<I, S> for ConnectionLimit
where
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Limited<I>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Limited<I>, S)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let admitted = self.open.clone().try_acquire_owned();
        let idle_timeout = self.idle_timeout;
        let refused = self.refused.clone();
        Box::pin(async move {
            match admitted {
                Ok(permit) => Ok((Limited::new(stream, permit, idle_timeout), service)),
                Err(_) => {
                    refused.inc();
                    Err(io::Error::other("connection limit reached"))
                }
            }
        })
    }
}

/// An admitted connection: holds its permit until dropped, and reads as closed once the
/// client has been silent for the idle timeout while a read was waiting.
pub struct Limited<I> {
    inner: I,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl<I> Limited<I> {
    fn new(inner: I, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Limited<I> {
        Limited {
            inner,
            _permit: permit,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// Restarts the idle clock: the connection just made progress.
    fn active(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(outcome) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(outcome)
            }
            // Silent too long: end of stream, which the HTTP layer treats as the client
            // closing an idle connection (or a request cut short).
            Poll::Pending if self.idle.as_mut().poll(cx).is_ready() => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, bytes);
        if matches!(outcome, Poll::Ready(Ok(written)) if written > 0) {
            self.active();
        }
        outcome
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(outcome, Poll::Ready(Ok(written)) if written > 0) {
            self.active();
        }
        outcome
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
