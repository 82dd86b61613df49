//! The per-call check, run before every handler as a tower layer.
//! (tonic interceptors are synchronous; this check awaits the database.)

use std::sync::Arc;

use super::authenticator::{Admitted, Authenticator};
use crate::status::to_status;
use crate::tower_util::{Check, CheckLayer};

/// Admits a call (putting the [`super::Principal`] into its extensions for
/// the handler) or answers it with the refusal, without calling the handler.
pub(crate) type AuthLayer = CheckLayer<Admission>;

impl AuthLayer {
    pub(crate) fn new(authenticator: Arc<Authenticator>) -> Self {
        CheckLayer(Admission { authenticator })
    }
}

#[derive(Clone)]
pub(crate) struct Admission {
    authenticator: Arc<Authenticator>,
}

impl<B: Send + 'static> Check<B> for Admission {
    fn check(
        &self,
        mut request: http::Request<B>,
    ) -> impl Future<Output = Result<http::Request<B>, tonic::Status>> + Send + 'static {
        let authenticator = self.authenticator.clone();
        async move {
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
                    Ok(request)
                }
                Err(refusal) => {
                    crate::metrics::metrics().record_denied(&refusal);
                    Err(to_status(refusal))
                }
            }
        }
    }
}
