//! Request bodies that can be sent again, and response bodies that keep
//! their instance's in-flight count until they end.
//!
//! A request body is one of:
//! - empty (most `GET`s): any try can send it;
//! - buffered: an idempotent request's body of known length up to
//!   `replay_buffer`, read before the first try, so that a retry after a
//!   broken connection can send it again;
//! - streamed: everything else. It is lent to the first try; when that try
//!   failed without reading any of it (no connection, or hyper gave the
//!   request back unsent) it is taken back for the retry. Once read, it is
//!   gone and the request cannot be retried.

use bytes::Bytes;
use http::Method;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::upstream::InFlight;

/// The error type of the bodies this module makes.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether RFC 9110 (§9.2.2) makes `method` idempotent.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A request's body, kept for its tries.
#[derive(Debug)]
pub(crate) enum Replay<B> {
    /// No body.
    Empty,
    /// The whole body.
    Buffered(Bytes),
    /// A body read as it is sent.
    Streamed(Lender<B>),
}

impl<B> Replay<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Keeps `body` of a request with `method`: read it now when the
    /// request is idempotent and its length is known and at most `limit`.
    /// Fails when the client's body cannot be read.
    pub(crate) async fn keep(
        body: B,
        method: &Method,
        limit: usize,
    ) -> Result<Replay<B>, BoxError> {
        let hint = body.size_hint();
        if hint.exact() == Some(0) {
            return Ok(Replay::Empty);
        }
        let small = hint
            .exact()
            .is_some_and(|n| usize::try_from(n).is_ok_and(|n| n <= limit));
        if is_idempotent(method) && small {
            let bytes = Limited::new(body, limit).collect().await?.to_bytes();
            return Ok(Replay::Buffered(bytes));
        }
        Ok(Replay::Streamed(Lender::new(body)))
    }

    /// The body for the next try; `None` when a try already read the
    /// streamed body.
    pub(crate) fn for_try(&self) -> Option<OutBody<B>> {
        match self {
            Replay::Empty => Some(OutBody::Full(None)),
            Replay::Buffered(bytes) => Some(OutBody::Full(Some(bytes.clone()))),
            Replay::Streamed(lender) => lender.lend().map(OutBody::Lent),
        }
    }

    /// Whether the body can be sent again after a try sent (some of) it.
    pub(crate) fn survives_sending(&self) -> bool {
        !matches!(self, Replay::Streamed(_))
    }
}

/// A streamed body and whether a try started reading it.
#[derive(Debug)]
pub(crate) struct Lender<B> {
    slot: Arc<Mutex<Option<B>>>,
    read: Arc<AtomicBool>,
}

impl<B> Lender<B> {
    fn new(body: B) -> Lender<B> {
        Lender {
            slot: Arc::new(Mutex::new(Some(body))),
            read: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The body, lent for one try, if no try read any of it yet.
    fn lend(&self) -> Option<Lent<B>> {
        if self.read.load(Ordering::Acquire) {
            return None;
        }
        let present = self.slot.lock().map(|s| s.is_some()).unwrap_or(false);
        present.then(|| Lent {
            slot: self.slot.clone(),
            read: self.read.clone(),
        })
    }
}

/// A streamed body lent to one try.
#[derive(Debug)]
pub(crate) struct Lent<B> {
    slot: Arc<Mutex<Option<B>>>,
    read: Arc<AtomicBool>,
}

/// The body of one try.
#[derive(Debug)]
pub(crate) enum OutBody<B> {
    /// Bytes in hand (or none).
    Full(Option<Bytes>),
    /// A streamed body, lent.
    Lent(Lent<B>),
}

impl<B> http_body::Body for OutBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OutBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            OutBody::Lent(lent) => {
                lent.read.store(true, Ordering::Release);
                let mut slot = match lent.slot.lock() {
                    Ok(slot) => slot,
                    Err(_) => return Poll::Ready(Some(Err("request body lost".into()))),
                };
                match slot.as_mut() {
                    Some(body) => Pin::new(body)
                        .poll_frame(cx)
                        .map(|f| f.map(|r| r.map_err(Into::into))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Full(bytes) => bytes.is_none(),
            OutBody::Lent(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Full(None) => SizeHint::with_exact(0),
            OutBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            OutBody::Lent(lent) => lent
                .slot
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(http_body::Body::size_hint))
                .unwrap_or_default(),
        }
    }
}

/// What the gateway answers a client with.
pub(crate) enum ResponseBody {
    /// An instance's response body, its instance counted in flight until
    /// it ends or the client goes.
    Upstream {
        /// The body.
        body: Incoming,
        /// The count.
        _in_flight: InFlight,
    },
    /// Anything else: the gateway's own answers.
    Other(axum::body::Body),
}

impl ResponseBody {
    /// An instance's response body, counted in flight.
    pub(crate) fn upstream(body: Incoming, in_flight: InFlight) -> Self {
        ResponseBody::Upstream {
            body,
            _in_flight: in_flight,
        }
    }
}

impl From<axum::body::Body> for ResponseBody {
    fn from(body: axum::body::Body) -> Self {
        ResponseBody::Other(body)
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            ResponseBody::Other(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Other(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Other(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;

    async fn read(body: OutBody<Body>) -> Bytes {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn empty_and_small_idempotent_bodies_replay() {
        let r = Replay::keep(Body::empty(), &Method::POST, 10)
            .await
            .unwrap();
        assert!(matches!(r, Replay::Empty));
        let r = Replay::keep(Body::from("abc"), &Method::PUT, 10)
            .await
            .unwrap();
        assert!(r.survives_sending());
        assert_eq!(read(r.for_try().unwrap()).await, "abc");
        assert_eq!(read(r.for_try().unwrap()).await, "abc");
    }

    #[tokio::test]
    async fn a_streamed_body_comes_back_only_if_unread() {
        let r = Replay::keep(Body::from("post body"), &Method::POST, 1024)
            .await
            .unwrap();
        assert!(!r.survives_sending());
        drop(r.for_try().unwrap());
        let second = r.for_try().expect("unread: lent again");
        assert_eq!(read(second).await, "post body");
        assert!(r.for_try().is_none(), "read once: gone");
        let big = Replay::keep(Body::from("0123456789ab"), &Method::PUT, 4)
            .await
            .unwrap();
        assert!(
            matches!(big, Replay::Streamed(_)),
            "over the limit: streamed"
        );
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(is_idempotent(&Method::DELETE));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
