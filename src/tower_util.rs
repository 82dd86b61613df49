//! A tower layer from a check that the call must pass before the inner
//! service: for the checks that await something (tonic interceptors are
//! synchronous).

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

/// What a [`CheckLayer`] awaits before its inner service.
pub(crate) trait Check<B>: Clone + Send + 'static {
    /// The request to pass on to the service, changed or not; or the status
    /// that answers the call instead, without calling the service.
    fn check(
        &self,
        request: http::Request<B>,
    ) -> impl Future<Output = Result<http::Request<B>, tonic::Status>> + Send + 'static;
}

/// Runs the check `C` before the services it layers.
#[derive(Debug, Clone)]
pub(crate) struct CheckLayer<C>(pub(crate) C);

impl<S, C: Clone> Layer<S> for CheckLayer<C> {
    type Service = Checked<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Checked {
            inner,
            check: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Checked<S, C> {
    inner: S,
    check: C,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, C, B> Service<http::Request<B>> for Checked<S, C>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    C: Check<B>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the instance that was polled ready serves this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let checked = self.check.check(request);
        Box::pin(async move {
            match checked.await {
                Ok(request) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
