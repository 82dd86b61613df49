//! The deadline of the work under way: a call's, set from its caller's
//! `grpc-timeout` by the server, or the health check's. Every connection the
//! store lends is due back by the sooner of it and the store's own bound
//! (`--db-call-timeout-ms`); past it, the connection is closed and the call
//! gets UNAVAILABLE (see [`super::connect`]).

use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline`: the database work it does is due by then.
/// A deadline set further out already holds.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    let deadline = current().map_or(deadline, |outer| outer.min(deadline));
    DEADLINE.scope(deadline, work).await
}

/// `work` with `deadline`, whatever deadline it ran with (for the server,
/// which sets a call's): a future of a type that can be named.
pub fn scope<F: Future>(
    deadline: Instant,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<Instant, F> {
    DEADLINE.scope(deadline, work)
}

/// The deadline of the work under way, if it has one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// When database work starting now is due: the sooner of the work's
/// deadline and `bound` from now (none: the work's deadline alone).
pub(crate) fn due(bound: Option<Duration>) -> Option<Instant> {
    let own = bound.map(|bound| Instant::now() + bound);
    match (current(), own) {
        (Some(outer), Some(own)) => Some(outer.min(own)),
        (outer, own) => outer.or(own),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sooner_deadline_wins() {
        assert_eq!(current(), None);
        assert_eq!(due(None), None);
        let soon = Instant::now() + Duration::from_millis(100);
        within(soon, async {
            assert_eq!(current(), Some(soon));
            assert_eq!(due(Some(Duration::from_secs(60))), Some(soon));
            assert!(due(Some(Duration::from_millis(1))).is_some_and(|at| at < soon));
            // A nested, later deadline does not extend the outer one.
            within(soon + Duration::from_secs(1), async {
                assert_eq!(current(), Some(soon));
            })
            .await;
        })
        .await;
    }
}
