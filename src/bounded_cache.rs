//! A bounded concurrent map that counts what it does: the replica cache's
//! maps (`store::cache`) and the memory of verified tokens
//! (`auth::tokens`) are each one. It uses nothing of the crate: what it
//! counts goes to the [`Tally`] its owner gives it.

/// Where a bounded map counts its lookups, the entries it drops to stay
/// within its bound, and how many it holds.
pub(crate) trait Tally: Copy {
    /// A lookup found a usable entry (`hit`), or not.
    fn lookup(self, hit: bool);
    /// An entry was dropped to stay within the bound.
    fn eviction(self);
    /// The map holds `entries` entries now.
    fn entries(self, entries: usize);
}

/// Counts the entries a map drops to stay within its bound.
#[derive(Clone, Copy)]
pub(crate) struct CountEvictions<C>(pub(crate) C);

impl<K, V, C: Tally> quick_cache::Lifecycle<K, V> for CountEvictions<C> {
    type RequestState = ();

    fn on_evict(&self, _state: &mut Self::RequestState, _key: K, _value: V) {
        self.0.eviction();
    }
}

/// Bytes an entry costs beyond its key and value: the concurrent map's
/// bookkeeping and the allocator's rounding. An estimate; the RSS of the
/// million-user run agrees with it within a few percent (docs/performance.md).
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// A bounded concurrent map that counts its hits, misses, evictions and
/// entries as `tally` (the replica cache's maps and the memory of verified
/// tokens).
pub(crate) struct CountedCache<K, V, W, C> {
    tally: C,
    inner: quick_cache::sync::Cache<K, V, W, quick_cache::DefaultHashBuilder, CountEvictions<C>>,
}

impl<K, V, W, C> CountedCache<K, V, W, C>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
    W: quick_cache::Weighter<K, V> + Clone,
    C: Tally,
{
    /// A map of at most `capacity` in `weighter`'s units, expected to hold
    /// about `capacity / typical_weight` entries.
    pub(crate) fn new(tally: C, capacity: u64, typical_weight: u64, weighter: W) -> Self {
        let items = usize::try_from(capacity / typical_weight.max(1))
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            tally,
            inner: quick_cache::sync::Cache::with(
                items,
                capacity.max(1),
                weighter,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions(tally),
            ),
        }
    }

    /// The entry for `key` when `usable` holds for it; counts a hit or a
    /// miss. An entry found unusable is removed, so that it neither takes
    /// room nor counts as used for the eviction policy.
    pub(crate) fn get<Q>(&self, key: &Q, usable: impl Fn(&V) -> bool) -> Option<V>
    where
        Q: std::hash::Hash + quick_cache::Equivalent<K> + ?Sized,
    {
        let found = match self.inner.get(key) {
            Some(value) if usable(&value) => Some(value),
            Some(_) => {
                self.inner.remove_if(key, |value| !usable(value));
                None
            }
            None => None,
        };
        self.tally.lookup(found.is_some());
        found
    }

    /// Counts a lookup that could not be made (the cache is not trusted).
    pub(crate) fn miss(&self) {
        self.tally.lookup(false);
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        self.inner.insert(key, value);
        self.tally.entries(self.inner.len());
    }

    pub(crate) fn clear(&self) {
        self.inner.clear();
        self.tally.entries(0);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.inner.weight()
    }

    #[cfg(test)]
    pub(crate) fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        Q: std::hash::Hash + quick_cache::Equivalent<K> + ?Sized,
    {
        self.inner.peek(key)
    }
}
