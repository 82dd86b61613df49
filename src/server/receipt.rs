//! A write's answer names the change it committed: the change feed's resume
//! token and sequence, in the response metadata
//! ([`crate::proto::metadata::CHANGE_TOKEN`] and
//! [`crate::proto::metadata::CHANGE_SEQUENCE`]), so that a client can drop
//! its own echoes from the feed and tell when its view includes its write.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use tower::{Layer, Service};

use crate::proto::metadata::{CHANGE_SEQUENCE, CHANGE_TOKEN};
use crate::store::feed;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReceiptLayer;

impl<S> Layer<S> for ReceiptLayer {
    type Service = WithReceipt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithReceipt { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WithReceipt<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for WithReceipt<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let (result, receipt) = feed::with_receipt(call).await;
            let mut response = result?;
            if let Some(position) = receipt {
                let headers = response.headers_mut();
                if let Ok(token) = HeaderValue::from_str(&position.token()) {
                    headers.insert(CHANGE_TOKEN, token);
                }
                headers.insert(CHANGE_SEQUENCE, HeaderValue::from(position.sequence));
            }
            Ok(response)
        })
    }
}
