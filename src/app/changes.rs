//! The change feed's use cases: listing an organisation's changes after a
//! resume token, and watching them as they commit (docs/api.md, "The change
//! feed").
//!
//! A replica's [`Hub`] knows each watched organisation's head: a doorbell
//! (the database's notifications) raises it at once, and polling every
//! `poll` raises it when a notification was lost. Each watch reads its own
//! changes from the database, one batch at a time and only as fast as its
//! client takes them, so a slow watcher lags without holding more than a
//! batch in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::Principal;
use crate::auth::access::{MEMBERS_READ, may_see};
use crate::auth::authenticator::ServiceCaller;
use crate::domain::DomainError;
use crate::domain::actor::Actor;
use crate::domain::change::{
    ChangeFilter, ChangeRecord, DEPLOYMENT, Heads, Position, TargetChange, TargetState,
    check_resumable,
};
use crate::store::Store;

/// How the feed runs on this replica.
#[derive(Debug, Clone, Copy)]
pub struct FeedSettings {
    /// How often the hub reads the heads of the watched organisations,
    /// whatever the doorbell says.
    pub poll: Duration,
    /// The heartbeat interval of a watch that asks for none, and the bounds
    /// of one that does.
    pub heartbeat: Duration,
    pub heartbeat_min: Duration,
    pub heartbeat_max: Duration,
    /// The most watches one caller may hold at once (on this replica).
    pub watches_per_caller: usize,
    /// How many changes a watch reads at a time.
    pub batch: i64,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            heartbeat: Duration::from_secs(15),
            heartbeat_min: Duration::from_secs(1),
            heartbeat_max: Duration::from_secs(60),
            watches_per_caller: 8,
            batch: 100,
        }
    }
}

/// How often a watch whose client does not take what it is sent checks
/// that its caller still stands: its revocation ends the stream within about
/// this long, however slow the client.
const RECHECK_WHILE_BLOCKED: Duration = Duration::from_millis(250);

/// Who watches: a member of the organisation (a user's credential or the
/// API key), or a registered internal service.
#[derive(Debug, Clone)]
pub enum Watcher {
    Member(Principal),
    Service(ServiceCaller),
}

impl Watcher {
    /// The name the per-caller limit counts watches under.
    fn key(&self) -> String {
        match self {
            Watcher::Member(principal) => principal.actor.to_string(),
            Watcher::Service(service) => format!("service:{}", service.name),
        }
    }

    /// The organisation a request asks about: a member's own (NOT_FOUND for
    /// another's); a service must name one.
    fn organisation(&self, asked: Option<Uuid>) -> Result<Uuid, DomainError> {
        match (self, asked) {
            (Watcher::Member(principal), None) => Ok(principal.organisation_id),
            (Watcher::Member(principal), Some(asked)) if asked == principal.organisation_id => {
                Ok(asked)
            }
            (Watcher::Member(_), Some(_)) => Err(DomainError::NotFound("organisation")),
            (Watcher::Service(_), Some(asked)) => Ok(asked),
            (Watcher::Service(_), None) => Err(DomainError::invalid(
                "organisation_id",
                "is required for an internal service",
            )),
        }
    }

    /// Fails when the watcher's credential no longer stands as it was
    /// admitted (revoked, renewed, its user suspended or deleted, its
    /// session ended; a service's key no longer registered), by the database
    /// as it is now, with what a new call with the credential would be
    /// answered. A user's role is read again: what the watcher is sent from
    /// then on is what its current role may see, as a new call would.
    async fn still_stands(&mut self, store: &Store) -> Result<(), DomainError> {
        match self {
            Watcher::Member(principal) => {
                if let Some(role) = store.recheck(&principal.change(None)).await? {
                    principal.role = role;
                }
                Ok(())
            }
            Watcher::Service(service) => {
                if store.service_key_works(&service.key_hash).await? {
                    Ok(())
                } else {
                    Err(DomainError::Unauthenticated(
                        crate::domain::error::AuthFailure::ServiceCredentialsInvalid,
                    ))
                }
            }
        }
    }

    /// The target as this watcher may see it, if at all.
    fn view(&self, target: &TargetChange) -> Option<TargetChange> {
        let Watcher::Member(principal) = self else {
            return Some(target.clone());
        };
        if !may_see(principal, target.target_type, target.owner) {
            return None;
        }
        match &target.state {
            Some(TargetState::Organisation(organisation)) if !principal.can(MEMBERS_READ) => {
                Some(TargetChange {
                    state: Some(TargetState::Organisation(organisation.without_members())),
                    ..target.clone()
                })
            }
            _ => Some(target.clone()),
        }
    }

    /// `change` with only the targets this watcher may see and asked for.
    fn select(&self, change: &ChangeRecord, filter: &ChangeFilter) -> Option<ChangeRecord> {
        let targets: Vec<TargetChange> = change
            .targets
            .iter()
            .filter(|target| filter.matches(target))
            .filter_map(|target| self.view(target))
            .collect();
        (!targets.is_empty()).then(|| ChangeRecord {
            targets,
            actor: self.actor_of(change),
            ..change.clone()
        })
    }

    /// Who made `change`, as this watcher may know it: a caller who may not
    /// read the organisation's members (as GetOrganisation's rule says) is
    /// told only when it made the change itself, or the operator did; no
    /// other user's id, and nothing of the API key (its fingerprint), as
    /// WhoAmI shows such a caller the organisation.
    fn actor_of(&self, change: &ChangeRecord) -> String {
        match self {
            Watcher::Member(principal)
                if !principal.can(MEMBERS_READ)
                    && change.actor != principal.actor.to_string()
                    && change.actor != Actor::Operator.to_string() =>
            {
                String::new()
            }
            _ => change.actor.clone(),
        }
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After the change the position names.
    Resume(Position),
    /// After the organisation's head as the watch begins.
    Now,
    /// With a snapshot of the organisation's current state.
    Snapshot,
}

/// A watch as asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub organisation_id: Option<Uuid>,
    pub start: Start,
    pub filter: ChangeFilter,
    /// None: the settings' default; otherwise within their bounds.
    pub heartbeat: Option<Duration>,
}

/// One message of a watch.
#[derive(Debug, Clone)]
pub enum Event {
    /// A change, and the sequence the watch was at before it.
    Change { change: ChangeRecord, previous: i64 },
    Heartbeat {
        head: i64,
        position: Position,
        at: DateTime<Utc>,
    },
    Snapshot {
        targets: Vec<TargetChange>,
        last: bool,
        position: Position,
    },
}

impl Event {
    /// The sequence a client that received this event has been brought to.
    fn brings_to(&self) -> Option<i64> {
        match self {
            Event::Change { change, .. } => Some(change.sequence),
            Event::Heartbeat { position, .. } => Some(position.sequence),
            Event::Snapshot { last, position, .. } => last.then_some(position.sequence),
        }
    }
}

/// The messages of a watch, as its client takes them.
pub struct Events {
    events: mpsc::Receiver<Event>,
    end: oneshot::Receiver<DomainError>,
    ended: bool,
}

impl Events {
    /// The next message, or the error that ended the watch as soon as it
    /// ended: before the messages still queued, which are older than the
    /// end (the client resumes after the last it took). None once the watch
    /// ended without an error, or after its error.
    pub async fn next(&mut self) -> Option<Result<Event, DomainError>> {
        if self.ended {
            return None;
        }
        let next = tokio::select! {
            biased;
            end = &mut self.end => end.ok().map(Err),
            event = self.events.recv() => match event {
                Some(event) => return Some(Ok(event)),
                // The watch ended; its error (if any) is sent just after.
                None => (&mut self.end).await.ok().map(Err),
            },
        };
        self.ended = true;
        next
    }
}

/// A page of ListChanges.
#[derive(Debug, Clone)]
pub struct ChangePage {
    /// Each change, with the sequence the page had brought its client to
    /// before it (the page token's, at first).
    pub changes: Vec<(ChangeRecord, i64)>,
    /// The organisation's head when the page was read.
    pub head: i64,
    /// After the last change the page examined.
    pub position: Position,
}

/// Completes once the feed is closing.
async fn closed(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// The change feed of this replica.
pub struct Changes {
    store: Store,
    hub: Arc<Hub>,
    settings: FeedSettings,
    watches: Mutex<HashMap<String, usize>>,
    /// Set when the server shuts down: every watch ends.
    closing: watch::Sender<bool>,
}

impl Changes {
    /// The feed, with its hub started (the task runs until aborted).
    pub fn start(store: Store, settings: FeedSettings) -> (Arc<Changes>, JoinHandle<()>) {
        let (hub, task) = Hub::start(store.clone(), settings.poll);
        let changes = Arc::new(Changes {
            store,
            hub,
            settings,
            watches: Mutex::default(),
            closing: watch::Sender::new(false),
        });
        (changes, task)
    }

    /// Ends every watch with UNAVAILABLE (its client resumes elsewhere, or
    /// here after the restart), so that the server's drain of open calls,
    /// which a watch would otherwise hold for ever, can finish.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Up to `limit` changes after `after` (none: from the oldest held) that
    /// `who` may see and that match `filter`.
    pub async fn list(
        &self,
        who: &Watcher,
        organisation_id: Option<Uuid>,
        after: Option<Position>,
        limit: i64,
        filter: &ChangeFilter,
    ) -> Result<ChangePage, DomainError> {
        let organisation_id = who.organisation(organisation_id)?;
        let heads = self.store.change_head(organisation_id).await?;
        let mut position = match after {
            Some(position) => {
                self.resumable("page_token", organisation_id, position, heads)
                    .await?
            }
            None => Position {
                organisation_id,
                sequence: heads.pruned_through,
                committed_at: None,
            },
        };
        let batch = self
            .store
            .changes_after(organisation_id, position.sequence, limit)
            .await?;
        // After the read: a credential revoked by one of these changes fails
        // here, so nothing committed after a revocation is returned.
        let mut who = who.clone();
        who.still_stands(&self.store).await?;
        let mut changes = Vec::new();
        let mut previous = position.sequence;
        for change in &batch {
            if let Some(visible) = who.select(change, filter) {
                changes.push((visible, previous));
                previous = change.sequence;
            }
            position = change.position();
        }
        Ok(ChangePage {
            changes,
            head: heads.head.max(position.sequence),
            position,
        })
    }

    /// Starts a watch for `who`; its messages, and the error that ended it,
    /// arrive through the [`Events`].
    pub async fn watch(
        self: &Arc<Self>,
        who: Watcher,
        request: WatchRequest,
    ) -> Result<Events, DomainError> {
        let organisation_id = who.organisation(request.organisation_id)?;
        let heartbeat = self.heartbeat_of(request.heartbeat)?;
        let slot = self.take_slot(&who)?;
        let heads = self.store.change_head(organisation_id).await?;
        let start = match request.start {
            Start::Resume(position) => Start::Resume(
                self.resumable("resume_token", organisation_id, position, heads)
                    .await?,
            ),
            other => other,
        };
        // "Now" is the head read here, before the client has its answer: a
        // change it commits once it has the answer comes after it.
        let committed_at = match (start, heads.head) {
            (Start::Now, head) if head > 0 => {
                self.store.change_commit_time(organisation_id, head).await?
            }
            _ => None,
        };
        let credentials = self.credentials_of(&who).await?;
        let (tx, rx) = mpsc::channel(16);
        let mut watch = Watch {
            changes: Arc::clone(self),
            who,
            organisation_id,
            filter: request.filter,
            heartbeat,
            tx,
            heads: self.hub.subscribe(organisation_id, heads.head),
            credentials,
            delivered: self.hub.register(organisation_id),
            position: Position {
                organisation_id,
                sequence: heads.head,
                committed_at,
            },
            sent_through: 0,
            _slot: slot,
        };
        let (end_tx, end) = oneshot::channel();
        tokio::spawn(async move {
            let ended = watch.run(start).await;
            // Ends at once, whether or not its client takes what it was
            // sent: its slot and its batch go now, and the error does not
            // wait for room behind the queued messages.
            drop(watch);
            if let Err(error) = ended {
                let _ = end_tx.send(error);
            }
        });
        Ok(Events {
            events: rx,
            end,
            ended: false,
        })
    }

    /// For a service, the deployment's feed, whose head its revocation
    /// raises (an organisation's feed does not move with it).
    async fn credentials_of(
        &self,
        who: &Watcher,
    ) -> Result<Option<watch::Receiver<i64>>, DomainError> {
        match who {
            Watcher::Service(_) => {
                let head = self.store.change_head(DEPLOYMENT).await?.head;
                Ok(Some(self.hub.subscribe(DEPLOYMENT, head)))
            }
            Watcher::Member(_) => Ok(None),
        }
    }

    fn heartbeat_of(&self, asked: Option<Duration>) -> Result<Duration, DomainError> {
        let FeedSettings {
            heartbeat,
            heartbeat_min,
            heartbeat_max,
            ..
        } = self.settings;
        match asked {
            None => Ok(heartbeat),
            Some(asked) if (heartbeat_min..=heartbeat_max).contains(&asked) => Ok(asked),
            Some(_) => Err(DomainError::invalid(
                "heartbeat_interval",
                format!(
                    "must be between {} and {} seconds",
                    heartbeat_min.as_secs(),
                    heartbeat_max.as_secs()
                ),
            )),
        }
    }

    /// `position`, when the feed can be resumed after it; a token of
    /// another organisation's feed is a bad `field`.
    async fn resumable(
        &self,
        field: &str,
        organisation_id: Uuid,
        position: Position,
        heads: Heads,
    ) -> Result<Position, DomainError> {
        if position.organisation_id != organisation_id {
            return Err(DomainError::invalid(
                field,
                "is a token of another organisation's feed",
            ));
        }
        let held = match position.sequence {
            0 => None,
            sequence => {
                self.store
                    .change_commit_time(organisation_id, sequence)
                    .await?
            }
        };
        check_resumable(&position, heads, held).map_err(|why| why.into_error())?;
        Ok(position)
    }

    /// One of the caller's watch slots, given back when the watch ends;
    /// RESOURCE_EXHAUSTED when it holds them all.
    fn take_slot(self: &Arc<Self>, who: &Watcher) -> Result<Slot, DomainError> {
        let key = who.key();
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let held = watches.entry(key.clone()).or_default();
        if *held >= self.settings.watches_per_caller {
            return Err(DomainError::ResourceExhausted {
                reason: "TOO_MANY_WATCHES",
                message: format!(
                    "a caller may hold {} watches at once: end one first",
                    self.settings.watches_per_caller
                ),
                retry_after: Duration::from_secs(1),
                metadata: vec![("limit", self.settings.watches_per_caller.to_string())],
            });
        }
        *held += 1;
        Ok(Slot {
            changes: Arc::clone(self),
            key,
        })
    }
}

/// A watch's place in its caller's limit.
struct Slot {
    changes: Arc<Changes>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut watches = self
            .changes
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = watches.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                watches.remove(&self.key);
            }
        }
    }
}

/// Why a watch stopped without an error to send: its client went away.
struct Gone;

/// One running watch.
struct Watch {
    changes: Arc<Changes>,
    who: Watcher,
    organisation_id: Uuid,
    filter: ChangeFilter,
    heartbeat: Duration,
    tx: mpsc::Sender<Event>,
    heads: watch::Receiver<i64>,
    /// For a service: the deployment's head, which moves when a service is
    /// registered or revoked.
    credentials: Option<watch::Receiver<i64>>,
    /// The sequence this watch has gone past, for the lag metric.
    delivered: Arc<Delivered>,
    /// After the last change the watch went past.
    position: Position,
    /// The sequence its client was brought to by the last message it was
    /// sent (a change's, a heartbeat's, the snapshot's; at first, the
    /// position it resumed from).
    sent_through: i64,
    _slot: Slot,
}

impl Watch {
    async fn run(&mut self, start: Start) -> Result<(), DomainError> {
        match start {
            Start::Resume(position) => {
                self.position = position;
                self.sent_through = position.sequence;
            }
            // At the head as the watch was answered (`Changes::watch`); a
            // heartbeat says where, so that the first change's
            // previous_sequence can be checked.
            Start::Now => {
                let head = self.position.sequence;
                if self.send_heartbeat(head).await.is_err() {
                    return Ok(());
                }
            }
            Start::Snapshot => {
                if self.send_snapshot().await?.is_err() {
                    return Ok(());
                }
            }
        }
        // A revocation committed after the call was admitted but before the
        // watch began listening moves no head it waits on: it fails here.
        self.who.still_stands(&self.changes.store).await?;
        self.delivered.set(self.position.sequence);
        let mut last_sent = Instant::now();
        loop {
            let head = *self.heads.borrow_and_update();
            if head > self.position.sequence {
                let before = self.position.sequence;
                match self.catch_up().await? {
                    Ok(true) => last_sent = Instant::now(),
                    Ok(false) => {}
                    Err(Gone) => return Ok(()),
                }
                // No change to read although the head is past the position
                // (its rows were deleted by hand): wait, rather than spin.
                if self.position.sequence != before {
                    continue;
                }
            }
            tokio::select! {
                changed = self.heads.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(last_sent + self.heartbeat) => {
                    self.who.still_stands(&self.changes.store).await?;
                    if self.send_heartbeat(head).await.is_err() {
                        return Ok(());
                    }
                    last_sent = Instant::now();
                }
                () = moved(&mut self.credentials) => {
                    self.who.still_stands(&self.changes.store).await?;
                }
                () = self.tx.closed() => return Ok(()),
                () = closed(self.changes.closing.subscribe()) => {
                    return Err(DomainError::Unavailable(
                        "the server is shutting down: resume with the last resume token".into(),
                    ));
                }
            }
        }
    }

    /// Sends the changes after the watch's position, one batch; whether it
    /// sent anything.
    async fn catch_up(&mut self) -> Result<Result<bool, Gone>, DomainError> {
        let store = &self.changes.store;
        let batch = store
            .changes_after(
                self.organisation_id,
                self.position.sequence,
                self.changes.settings.batch,
            )
            .await?;
        // After the read: a revocation among these changes (or committed
        // before now) fails here, before any of them is sent.
        self.who.still_stands(store).await?;
        let mut sent = false;
        let mut skipped = false;
        for change in &batch {
            match self.who.select(change, &self.filter) {
                Some(visible) => {
                    let event = Event::Change {
                        change: visible,
                        previous: self.sent_through,
                    };
                    if self.send(event).await?.is_err() {
                        return Ok(Err(Gone));
                    }
                    sent = true;
                    skipped = false;
                }
                None => skipped = true,
            }
            self.position = change.position();
            self.delivered.set(self.position.sequence);
        }
        if skipped {
            let head = *self.heads.borrow();
            if self.send_heartbeat(head).await.is_err() {
                return Ok(Err(Gone));
            }
            sent = true;
        }
        Ok(Ok(sent))
    }

    async fn send_heartbeat(&mut self, head: i64) -> Result<(), Gone> {
        let event = Event::Heartbeat {
            head: head.max(self.position.sequence),
            position: self.position,
            at: Utc::now(),
        };
        match self.send(event).await {
            Ok(sent) => sent,
            Err(_) => Err(Gone),
        }
    }

    /// Sends `event` once the client has room for it, checking meanwhile
    /// that the watcher still stands (a revoked watcher's stream ends
    /// however slowly its client reads).
    async fn send(&mut self, event: Event) -> Result<Result<(), Gone>, DomainError> {
        loop {
            tokio::select! {
                permit = self.tx.reserve() => {
                    return Ok(match permit {
                        Ok(permit) => {
                            if let Some(through) = event.brings_to() {
                                self.sent_through = through;
                            }
                            permit.send(event);
                            Ok(())
                        }
                        Err(_) => Err(Gone),
                    });
                }
                () = tokio::time::sleep(RECHECK_WHILE_BLOCKED) => {
                    self.who.still_stands(&self.changes.store).await?;
                }
            }
        }
    }

    /// Sends the organisation's current state, then sets the position to
    /// the sequence it shows.
    async fn send_snapshot(&mut self) -> Result<Result<(), Gone>, DomainError> {
        let store = self.changes.store.clone();
        let (pages_tx, mut pages) = mpsc::channel(2);
        let organisation_id = self.organisation_id;
        let types = self.filter.target_types.clone();
        let reader =
            tokio::spawn(async move { store.snapshot(organisation_id, &types, pages_tx).await });
        let mut sequence = 0;
        while let Some((at, targets)) = pages.recv().await {
            sequence = at;
            let targets: Vec<&TargetChange> = targets
                .iter()
                .filter(|target| self.filter.matches(target))
                .collect();
            if targets.is_empty() {
                continue;
            }
            // After the page's read, as after a batch of changes: a page
            // read after the watcher's revocation (its targets may show
            // states committed after it) fails here, before it is sent.
            self.who.still_stands(&self.changes.store).await?;
            let targets: Vec<TargetChange> = targets
                .into_iter()
                .filter_map(|target| self.who.view(target))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let page = Event::Snapshot {
                targets,
                last: false,
                position: Position {
                    organisation_id,
                    sequence: at,
                    committed_at: None,
                },
            };
            if self.send(page).await?.is_err() {
                reader.abort();
                return Ok(Err(Gone));
            }
        }
        let at = reader
            .await
            .map_err(|error| DomainError::Internal(format!("snapshot reader: {error}")))??;
        sequence = sequence.max(at);
        let committed_at = match sequence {
            0 => None,
            sequence => {
                self.changes
                    .store
                    .change_commit_time(organisation_id, sequence)
                    .await?
            }
        };
        self.position = Position {
            organisation_id,
            sequence,
            committed_at,
        };
        self.who.still_stands(&self.changes.store).await?;
        let last = Event::Snapshot {
            targets: Vec::new(),
            last: true,
            position: self.position,
        };
        self.send(last).await
    }
}

/// Returns when `head` moves; never when there is none to wait on (or its
/// hub is gone).
async fn moved(head: &mut Option<watch::Receiver<i64>>) {
    if let Some(receiver) = head
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// The sequence one watch has gone past.
#[derive(Debug)]
struct Delivered {
    organisation_id: Uuid,
    sequence: AtomicI64,
}

impl Delivered {
    fn set(&self, sequence: i64) {
        self.sequence.store(sequence, Ordering::Relaxed);
    }
}

/// The heads of the organisations watched on this replica.
pub struct Hub {
    store: Store,
    heads: Mutex<HashMap<Uuid, watch::Sender<i64>>>,
    watches: Mutex<Vec<std::sync::Weak<Delivered>>>,
}

impl Hub {
    fn start(store: Store, poll: Duration) -> (Arc<Hub>, JoinHandle<()>) {
        let hub = Arc::new(Hub {
            store,
            heads: Mutex::default(),
            watches: Mutex::default(),
        });
        let task = tokio::spawn(Arc::clone(&hub).run(poll));
        (hub, task)
    }

    async fn run(self: Arc<Self>, poll: Duration) {
        let (doorbell, mut rings) = mpsc::channel(1024);
        let store = self.store.clone();
        let listener = tokio::spawn(async move { store.listen_for_changes(doorbell).await });
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ring = rings.recv() => match ring {
                    Some((organisation_id, sequence)) => self.raise(organisation_id, sequence),
                    None => break,
                },
                _ = ticker.tick() => self.poll().await,
            }
        }
        listener.abort();
    }

    /// Reads the heads of every watched organisation (dropping those no
    /// longer watched), and records the watches' lag.
    async fn poll(&self) {
        let watched: Vec<Uuid> = {
            let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
            heads.retain(|_, sender| sender.receiver_count() > 0);
            heads.keys().copied().collect()
        };
        if watched.is_empty() {
            self.record_lag();
            return;
        }
        match self.store.change_heads(&watched).await {
            Ok(found) => {
                for (organisation_id, heads) in found {
                    self.raise(organisation_id, heads.head);
                }
            }
            Err(error) => tracing::warn!(%error, "could not read the change feed's heads"),
        }
        self.record_lag();
    }

    fn raise(&self, organisation_id: Uuid, head: i64) {
        let heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = heads.get(&organisation_id) {
            sender.send_if_modified(|current| {
                let raised = head > *current;
                if raised {
                    *current = head;
                }
                raised
            });
        }
    }

    fn subscribe(&self, organisation_id: Uuid, head: i64) -> watch::Receiver<i64> {
        let receiver = {
            let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
            heads
                .entry(organisation_id)
                .or_insert_with(|| watch::channel(head).0)
                .subscribe()
        };
        self.raise(organisation_id, head);
        receiver
    }

    fn register(&self, organisation_id: Uuid) -> Arc<Delivered> {
        let delivered = Arc::new(Delivered {
            organisation_id,
            sequence: AtomicI64::new(0),
        });
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|watch| watch.strong_count() > 0);
        watches.push(Arc::downgrade(&delivered));
        delivered
    }

    /// Sets the gauges of the watches on this replica: how many, and how far
    /// the one furthest behind its organisation's head is.
    fn record_lag(&self) {
        let heads: HashMap<Uuid, i64> = {
            let heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
            heads
                .iter()
                .map(|(organisation_id, sender)| (*organisation_id, *sender.borrow()))
                .collect()
        };
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let mut count = 0;
        let mut max_lag = 0;
        for watch in watches.iter().filter_map(std::sync::Weak::upgrade) {
            count += 1;
            let head = heads.get(&watch.organisation_id).copied().unwrap_or(0);
            max_lag = max_lag.max(head - watch.sequence.load(Ordering::Relaxed));
        }
        crate::metrics::metrics().set_change_watches(count, max_lag);
    }
}
