//! The epoch guard: the eviction stamps, and the epoch a read takes before
//! it begins, so that what a read that straddles an eviction puts in the
//! cache is never used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use uuid::Uuid;

/// Organisations share this many eviction stamps: evicting one organisation
/// also retires the entries of the others on its stripe, which costs them a
/// read, never correctness, and keeps an eviction O(1) and the memory fixed.
pub(super) const STRIPES: usize = 4096;

/// The eviction stamps. `sequence` advances with every eviction; a read
/// takes its value before it begins ([`Epoch`]) and its entry carries it. An
/// entry is used only while no eviction that concerns it came later: its
/// stamp is not below the stamp of its organisation's stripe, of the
/// services, or of the last clearing.
pub(super) struct Stamps {
    sequence: AtomicU64,
    cleared: AtomicU64,
    services: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

impl Stamps {
    pub(super) fn new() -> Self {
        Self {
            sequence: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
            services: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, organisation_id: Uuid) -> &AtomicU64 {
        let (_, low) = organisation_id.as_u64_pair();
        // In range: the remainder is below the number of stripes.
        &self.stripes[(low % STRIPES as u64) as usize]
    }

    pub(super) fn current(&self) -> u64 {
        self.sequence.load(Ordering::SeqCst)
    }

    /// Advances the sequence and marks `stamp` with it: every entry read
    /// before now that `stamp` concerns is retired.
    fn retire(&self, stamp: &AtomicU64) {
        let now = self
            .sequence
            .fetch_add(1, Ordering::SeqCst)
            .saturating_add(1);
        stamp.fetch_max(now, Ordering::SeqCst);
    }

    /// Retires every entry read before now (the cache is emptied).
    pub(super) fn retire_all(&self) {
        self.retire(&self.cleared);
    }

    /// Retires every registered service read before now.
    pub(super) fn retire_services(&self) {
        self.retire(&self.services);
    }

    /// Retires every entry of `organisation_id`'s stripe read before now.
    pub(super) fn retire_organisation(&self, organisation_id: Uuid) {
        self.retire(self.stripe(organisation_id));
    }

    pub(super) fn organisation_entry_valid(&self, stamp: u64, organisation_id: Uuid) -> bool {
        stamp >= self.cleared.load(Ordering::SeqCst)
            && stamp >= self.stripe(organisation_id).load(Ordering::SeqCst)
    }

    pub(super) fn service_entry_valid(&self, stamp: u64) -> bool {
        stamp >= self.cleared.load(Ordering::SeqCst)
            && stamp >= self.services.load(Ordering::SeqCst)
    }
}

/// The epoch a read began in and when, when the cache may be filled at all.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(pub(super) Option<(u64, Instant)>);
