//! The tower layer that runs the per-call check before every handler.
//! (tonic interceptors are synchronous; this check awaits the database.)

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::authenticator::{Admitted, Authenticator};
use crate::status::to_status;

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthMiddleware {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// Admits a call (putting the [`super::Principal`] into its extensions for
/// the handler) or answers it with the refusal, without calling the handler.
#[derive(Clone)]
pub struct AuthMiddleware<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for AuthMiddleware<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the instance that was polled ready serves this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            match authenticator
                .admit(request.uri().path(), request.headers())
                .await
            {
                Ok(admitted) => {
                    let caller = match admitted {
                        Admitted::Anonymous => "anonymous",
                        Admitted::Principal(principal) => {
                            request.extensions_mut().insert(principal);
                            "user"
                        }
                        Admitted::Service(service) => {
                            request.extensions_mut().insert(service);
                            "service"
                        }
                    };
                    crate::metrics::metrics().record_allowed(caller);
                    inner.call(request).await
                }
                Err(refusal) => {
                    crate::metrics::metrics().record_denied(&refusal);
                    Ok(to_status(refusal).into_http())
                }
            }
        })
    }
}
