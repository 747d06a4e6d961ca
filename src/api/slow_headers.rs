//! A deadline for each request's header block. poem 3's server builds hyper's connection itself
//! and offers no `header_read_timeout` (only an idle timeout), so a client sending its headers
//! one byte a second, more often than the idle timeout, would hold a connection for ever. This
//! wraps the listener's connections: from the first byte of a request until its blank line
//! (`\r\n\r\n`) it allows `HTTP_HEADER_TIMEOUT_SECS`, then fails the read, and hyper closes
//! the connection. The clock starts again with the first byte after a response, so a keep-alive
//! connection waiting between requests is the idle timeout's business, not this one's.
//!
//! HTTP/2 with prior knowledge (a connection starting with its whole 24-byte preface) is left
//! alone: its frames have no header block to wait for. Until the preface is complete the
//! deadline runs as for HTTP/1 (`PRI` is a valid HTTP/1 method too).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The end of a header block.
const BLANK_LINE: &[u8; 4] = b"\r\n\r\n";
/// How an HTTP/2 connection with prior knowledge starts.
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How an interim (1xx) response starts: the request's body is still to come after it.
const INTERIM: &[u8] = b"HTTP/1.1 1";

/// The listener's acceptor, its connections under the header deadline (none: as they are).
pub struct HeaderDeadline<A> {
    inner: A,
    timeout: Option<Duration>,
}

impl<A> HeaderDeadline<A> {
    pub fn new(inner: A, timeout: Option<Duration>) -> Self {
        Self { inner, timeout }
    }
}

impl<A: Acceptor> Acceptor for HeaderDeadline<A> {
    type Io = DeadlineIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)>> + Send {
        let timeout = self.timeout;
        let accepted = self.inner.accept();
        async move {
            let (io, local, remote, scheme) = accepted.await?;
            let io = DeadlineIo {
                inner: io,
                state: match timeout {
                    Some(timeout) => State::Head {
                        timeout,
                        matched: 0,
                        deadline: None,
                    },
                    None => State::Off,
                },
                preface: Some(0),
                peer: remote.to_string(),
            };
            Ok((io, local, remote, scheme))
        }
    }
}

/// Where the connection is in its current request.
enum State {
    /// Reading a request's header block: `matched` bytes of [`BLANK_LINE`] seen last; the
    /// deadline runs from its first byte.
    Head {
        timeout: Duration,
        matched: usize,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    /// The header block is in: the body (bounded by `REQUEST_BODY_TIMEOUT_SECS`) and the
    /// response, until the response is written.
    Answering { timeout: Duration },
    /// No deadline (disabled, or HTTP/2).
    Off,
}

/// A connection whose reads fail once a header block is overdue.
pub struct DeadlineIo<T> {
    inner: T,
    state: State,
    /// Bytes of [`HTTP2_PREFACE`] the connection started with so far; `None` once it differs.
    preface: Option<usize>,
    peer: String,
}

impl<T> DeadlineIo<T> {
    /// Follows the bytes just read.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(seen) = self.preface {
            let rest = HTTP2_PREFACE.get(seen..).unwrap_or_default();
            let common = rest.len().min(bytes.len());
            self.preface = (bytes.get(..common) == rest.get(..common)).then_some(seen + common);
            if self.preface == Some(HTTP2_PREFACE.len()) {
                self.state = State::Off;
                return;
            }
        }
        let State::Head {
            timeout,
            matched,
            deadline,
        } = &mut self.state
        else {
            return;
        };
        if deadline.is_none() {
            *deadline = Some(Box::pin(tokio::time::sleep_until(
                Instant::now() + *timeout,
            )));
        }
        for &byte in bytes {
            *matched = if byte == BLANK_LINE[*matched] {
                *matched + 1
            } else if byte == BLANK_LINE[0] {
                1
            } else {
                0
            };
            if *matched == BLANK_LINE.len() {
                self.state = State::Answering { timeout: *timeout };
                return;
            }
        }
    }

    /// Follows the bytes just written: a response (not an interim one) ends the request.
    fn wrote(&mut self, bytes: &[u8]) {
        if let State::Answering { timeout } = self.state {
            if !bytes.is_empty() && !bytes.starts_with(INTERIM) {
                self.state = State::Head {
                    timeout,
                    matched: 0,
                    deadline: None,
                };
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                let read = filled.get(before..).unwrap_or_default().to_vec();
                this.saw(&read);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                if let State::Head {
                    timeout,
                    deadline: Some(deadline),
                    ..
                } = &mut this.state
                {
                    if deadline.as_mut().poll(cx).is_ready() {
                        tracing::info!(
                            peer = %this.peer,
                            timeout_secs = timeout.as_secs(),
                            "closing a connection whose request headers did not arrive in time"
                        );
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the request's headers did not arrive in time",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.wrote(buf.get(..n).unwrap_or_default());
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            if n > 0 {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                this.wrote(first);
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> DeadlineIo<tokio::io::Empty> {
        DeadlineIo {
            inner: tokio::io::empty(),
            state: State::Head {
                timeout: Duration::from_secs(10),
                matched: 0,
                deadline: None,
            },
            preface: Some(0),
            peer: "test".into(),
        }
    }

    fn reading_head(io: &DeadlineIo<tokio::io::Empty>) -> Option<bool> {
        match &io.state {
            State::Head { deadline, .. } => Some(deadline.is_some()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_deadline_runs_from_a_requests_first_byte_to_its_blank_line() {
        let mut io = io();
        assert_eq!(reading_head(&io), Some(false), "nothing read: no deadline");
        io.saw(b"GET / HTTP/1.1\r\nHost: a\r\n\r");
        assert_eq!(reading_head(&io), Some(true));
        // The blank line split across reads.
        io.saw(b"\n");
        assert_eq!(reading_head(&io), None, "answering");
        // An interim response does not end the request; the response does.
        io.wrote(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(reading_head(&io), None);
        io.wrote(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            reading_head(&io),
            Some(false),
            "waiting for the next request"
        );
        io.saw(b"G");
        assert_eq!(reading_head(&io), Some(true));
    }

    #[tokio::test]
    async fn a_lone_cr_or_lf_is_not_a_blank_line() {
        let mut io = io();
        io.saw(b"GET / HTTP/1.1\r\n\rX\n\r\r\n\n");
        assert_eq!(reading_head(&io), Some(true));
        io.saw(b"\r\n\r\n");
        assert_eq!(reading_head(&io), None);
    }

    #[tokio::test]
    async fn http2_with_prior_knowledge_has_no_deadline() {
        let mut io = io();
        io.saw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(matches!(io.state, State::Off));
        // Its preface split across reads.
        let mut io = self::io();
        io.saw(b"PRI * HTTP/2.0\r\n");
        assert_eq!(reading_head(&io), Some(true));
        io.saw(b"\r\nSM\r\n\r\n\0\0");
        assert!(matches!(io.state, State::Off));
    }

    #[tokio::test]
    async fn an_http1_request_with_the_method_pri_keeps_its_deadline() {
        let mut io = io();
        io.saw(b"PRI / HTTP/1.1\r\nx-slow: a");
        assert_eq!(reading_head(&io), Some(true));
        assert_eq!(io.preface, None);
    }
}
