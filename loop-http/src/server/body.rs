//! Response bodies: whole buffers for JSON answers and a channel-fed body for streams (SSE and
//! log files), so a producer task can write at its own pace and a slow reader pushes back
//! through a bounded channel instead of growing a buffer.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// The body type of every response.
pub(crate) type RespBody = BoxBody<Bytes, io::Error>;

/// A body fed by a bounded channel; it ends when every sender is dropped. An `Err` item aborts
/// the response (the client sees a truncated body, never a silently short one).
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it, holding at most `capacity` chunks.
    pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Result<Bytes, io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// A whole-buffer body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A streaming body.
pub(crate) fn stream(body: ChannelBody) -> RespBody {
    body.boxed()
}

/// A response with a body and a content type.
pub(crate) fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: RespBody,
) -> Response<RespBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<RespBody> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(status, "application/json", full(bytes)),
        Err(e) => error(&ApiError::internal(format!(
            "cannot encode the answer: {e}"
        ))),
    }
}

/// The JSON response of an error.
pub(crate) fn error(e: &ApiError) -> Response<RespBody> {
    let bytes = serde_json::to_vec(&e.body()).unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"cannot encode the error"}}"#.to_vec()
    });
    with_type(e.status, "application/json", full(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_body_yields_chunks_then_ends() {
        let (tx, body) = ChannelBody::channel(4);
        tx.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
        tx.send(Ok(Bytes::from_static(b"cd"))).await.unwrap();
        drop(tx);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcd");
    }

    #[tokio::test]
    async fn channel_body_error_aborts() {
        let (tx, body) = ChannelBody::channel(4);
        tx.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
        tx.send(Err(io::Error::other("disk gone"))).await.unwrap();
        drop(tx);
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn error_renders_json() {
        let resp = error(&ApiError::not_found("run x not found"));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "run x not found");
    }
}
