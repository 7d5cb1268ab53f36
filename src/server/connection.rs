//! Limits on the endpoint's connections: at most `max_connections` open at once (one more
//! is closed as soon as it is accepted); a connection with no request in progress on which
//! the client sends nothing for `idle_timeout` is closed; and once a request's first bytes
//! arrive, its headers must be complete within `header_timeout`. Owns the TCP side only:
//! the time a request body may take is the handler's business.
//!
//! The stream and the per-connection service share a [`Progress`]: the service marks
//! requests dispatched (headers complete) and answered, the stream sees the bytes, so an
//! idle keep-alive connection and a slow request head get their own clocks.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum_server::accept::Accept;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Silence allowed while no request is in progress.
    pub idle: Duration,
    /// Time from a request's first byte until its headers are complete.
    pub header: Duration,
}

/// An acceptor that admits at most as many connections as its semaphore has permits and
/// applies [`Timeouts`] to each admitted one.
#[derive(Clone)]
pub struct ConnectionLimit {
    open: Arc<Semaphore>,
    timeouts: Timeouts,
    refused: Counter,
}

impl ConnectionLimit {
    /// Admits `max_connections` at once, counting those it closes in `refused`.
    pub fn new(max_connections: usize, timeouts: Timeouts, refused: Counter) -> ConnectionLimit {
        ConnectionLimit {
            open: Arc::new(Semaphore::new(max_connections.max(1))),
            timeouts,
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
    type Service = Tracked<S>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Limited<I>, Tracked<S>)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let admitted = self.open.clone().try_acquire_owned();
        let timeouts = self.timeouts;
        let refused = self.refused.clone();
        Box::pin(async move {
            let Ok(permit) = admitted else {
                refused.inc();
                return Err(io::Error::other("connection limit reached"));
            };
            let progress = Arc::new(Progress::new());
            let service = Tracked {
                inner: service,
                progress: progress.clone(),
            };
            Ok((Limited::new(stream, permit, timeouts, progress), service))
        })
    }
}

/// Where one connection stands, in milliseconds since its `start`.
struct Progress {
    start: Instant,
    /// Requests dispatched to the service and not yet answered.
    in_flight: AtomicUsize,
    /// When the connection last had nothing in progress (accepted, or last request answered).
    idle_since: AtomicU64,
    /// When the first byte of the request head now arriving came; [`NO_HEAD`] if none is.
    head_since: AtomicU64,
    /// The task that last found the stream without data: woken when a request is answered,
    /// so the idle clock starts then rather than at the next event on the socket.
    reader: Mutex<Option<Waker>>,
}

/// `head_since` when no request head is arriving.
const NO_HEAD: u64 = u64::MAX;

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NO_HEAD),
            reader: Mutex::new(None),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The client sent bytes: with nothing in progress, a request head has begun.
    fn received(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now();
            let _first_byte =
                self.head_since
                    .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Wakes `waker` when the request in progress is answered.
    fn wake_on_answer(&self, waker: &Waker) {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if !reader.as_ref().is_some_and(|known| known.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
    }

    /// When the connection must be closed if the client stays silent, or `None` while a
    /// request is in progress.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let (since, allowed) = match self.head_since.load(Ordering::Acquire) {
            NO_HEAD => (self.idle_since.load(Ordering::Acquire), timeouts.idle),
            head => (head, timeouts.header),
        };
        Some(self.start + Duration::from_millis(since) + allowed)
    }
}

/// The per-connection service, marking each request dispatched and answered.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S, Request> Service<Request> for Tracked<S>
where
    S: Service<Request>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.progress.in_flight.fetch_add(1, Ordering::AcqRel);
        self.progress.head_since.store(NO_HEAD, Ordering::Release);
        let answered = Answered(self.progress.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let _answered = answered;
            response.await
        })
    }
}

/// Marks the request answered when dropped (its response is ready, or it was abandoned).
struct Answered(Arc<Progress>);

impl Drop for Answered {
    fn drop(&mut self) {
        let now = self.0.now();
        self.0.idle_since.store(now, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        let reader = self
            .0
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// An admitted connection: holds its permit until dropped, and reads as closed once the
/// client has been silent past its deadline while the server waited for it.
pub struct Limited<I> {
    inner: I,
    _permit: OwnedSemaphorePermit,
    timeouts: Timeouts,
    progress: Arc<Progress>,
    timer: Pin<Box<Sleep>>,
}

impl<I> Limited<I> {
    fn new(
        inner: I,
        permit: OwnedSemaphorePermit,
        timeouts: Timeouts,
        progress: Arc<Progress>,
    ) -> Limited<I> {
        let first = progress.start + timeouts.idle;
        Limited {
            inner,
            _permit: permit,
            timeouts,
            progress,
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Whether the client's time is up: waits on the current deadline otherwise, and for
    /// the answer of a request in progress (which starts the idle clock).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Left before the deadline is read, so an answer given meanwhile still wakes us.
        self.progress.wake_on_answer(cx.waker());
        let Some(deadline) = self.progress.deadline(&self.timeouts) else {
            return false;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
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
                    self.progress.received();
                }
                Poll::Ready(outcome)
            }
            // Time is up: end of stream, which the HTTP layer treats as the client closing
            // an idle connection or abandoning a request head.
            Poll::Pending if self.expired(cx) => Poll::Ready(Ok(())),
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
        Pin::new(&mut self.inner).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Duration::from_secs(60),
        header: Duration::from_secs(10),
    };

    #[tokio::test]
    async fn each_phase_of_a_connection_has_its_own_clock() {
        let progress = Arc::new(Progress::new());
        let idle = progress.start + TIMEOUTS.idle;
        assert_eq!(progress.deadline(&TIMEOUTS), Some(idle));
        progress.received();
        let head = progress.deadline(&TIMEOUTS).unwrap();
        assert!(head < idle, "a request head gets the header clock");
        progress.received();
        assert_eq!(
            progress.deadline(&TIMEOUTS),
            Some(head),
            "more bytes do not reset it"
        );
        progress.in_flight.fetch_add(1, Ordering::AcqRel);
        progress.head_since.store(NO_HEAD, Ordering::Release);
        assert_eq!(
            progress.deadline(&TIMEOUTS),
            None,
            "no clock while the server works"
        );
        drop(Answered(progress.clone()));
        assert!(
            progress.deadline(&TIMEOUTS).unwrap() >= idle,
            "answered: the idle clock again"
        );
    }
}
