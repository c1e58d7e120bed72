//! When a failed try may be sent again, to another instance: the rules
//! are in the crate documentation (section "Retries"); this module
//! classifies a failure and applies them. The budget and the deadline are
//! checked by the caller.

use crate::body::{is_idempotent, Replay};
use crate::metrics::UpstreamError;
use http::Method;

/// How a try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What went wrong.
    pub(crate) error: UpstreamError,
    /// Whether any byte of the request may have reached the instance.
    pub(crate) sent: bool,
}

impl Failure {
    /// A try whose time ran out: the request may have been sent.
    pub(crate) const TIMEOUT: Failure = Failure {
        error: UpstreamError::Timeout,
        sent: true,
    };

    /// What a failed send says about the try.
    pub(crate) fn of(error: &crate::pool::SendError) -> Failure {
        use crate::pool::SendError;
        match error {
            SendError::Connect(_) | SendError::ConnectTimeout => Failure {
                error: UpstreamError::Connect,
                sent: false,
            },
            // hyper hands a request back "canceled" only when it never
            // started writing it (the connection closed first).
            SendError::Http(e) => Failure {
                error: UpstreamError::Broken,
                sent: !e.is_canceled(),
            },
        }
    }
}

/// Whether the policy allows another try of a `method` request whose body
/// is `replay` after `failure` (the budget and the deadline are asked
/// afterwards).
pub(crate) fn may_retry<B>(method: &Method, replay: &Replay<B>, failure: Failure) -> bool
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<crate::body::BoxError>,
{
    if !failure.sent {
        return replay.for_try().is_some();
    }
    is_idempotent(method) && replay.survives_sending()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    const CONNECT: Failure = Failure {
        error: UpstreamError::Connect,
        sent: false,
    };
    const BROKEN: Failure = Failure {
        error: UpstreamError::Broken,
        sent: true,
    };

    #[tokio::test]
    async fn unsent_requests_are_retried_whatever_their_method() {
        let post = Replay::keep(Body::from("x"), &Method::POST, 1024)
            .await
            .unwrap();
        assert!(may_retry(&Method::POST, &post, CONNECT));
        let get = Replay::keep(Body::empty(), &Method::GET, 1024)
            .await
            .unwrap();
        assert!(may_retry(&Method::GET, &get, CONNECT));
    }

    #[tokio::test]
    async fn a_sent_post_is_never_retried() {
        let post = Replay::keep(Body::from("x"), &Method::POST, 1024)
            .await
            .unwrap();
        assert!(!may_retry(&Method::POST, &post, BROKEN));
        assert!(!may_retry(&Method::POST, &post, Failure::TIMEOUT));
        let empty_post = Replay::keep(Body::empty(), &Method::POST, 1024)
            .await
            .unwrap();
        assert!(!may_retry(&Method::POST, &empty_post, BROKEN));
        assert!(!may_retry(&Method::PATCH, &empty_post, BROKEN));
    }

    #[tokio::test]
    async fn sent_idempotent_requests_are_retried_when_their_body_is_in_hand() {
        let get = Replay::keep(Body::empty(), &Method::GET, 1024)
            .await
            .unwrap();
        assert!(may_retry(&Method::GET, &get, BROKEN));
        assert!(may_retry(&Method::GET, &get, Failure::TIMEOUT));
        let put = Replay::keep(Body::from("small"), &Method::PUT, 1024)
            .await
            .unwrap();
        assert!(may_retry(&Method::PUT, &put, BROKEN));
        let big_put = Replay::keep(Body::from("too big for the buffer"), &Method::PUT, 4)
            .await
            .unwrap();
        assert!(!may_retry(&Method::PUT, &big_put, BROKEN));
    }
}
