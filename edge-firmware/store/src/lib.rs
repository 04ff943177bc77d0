//! `fulmar-flash-store`: the firmware broker's persisted records (the core's key/value
//! pairs, `fulmar_core::persist`) in NOR flash, in a `sequential-storage` map written
//! append-only, so it works on flash that cannot write a word twice between erases (the
//! STM32H7's 32-byte words with ECC) as well as on flash that can.
//!
//! `sequential-storage` removes a map item by clearing bits in a word it already wrote
//! (`remove_item` needs `MultiwriteNorFlash`). This store never does:
//! - a put appends the value; the newest item of a key is its value (the map's own rule);
//! - a delete appends a tombstone (an empty value) when the key's newest item is live;
//! - every item carries a write number, so a scan can tell the newest item of a key (the
//!   one [`MapStorage::fetch_item`] returns has the same number) from older ones without a
//!   table of keys in RAM: [`Store::restore`] hands over each live key exactly once;
//! - the range is two halves, each a map, one of which holds the state. Starting over
//!   ([`Store::start_over`]) erases the other half and writes go there; a boot still finds
//!   the old half's state until [`Store::commit`] writes the new half's generation (a key
//!   of the store's own, [`GENERATION_KEY`]), one more than the old half's. A boot reads
//!   the half of the higher generation, so a power cut in the middle of a rewrite loses
//!   nothing: the old half stays whole until the new one is.
//!
//! The map's garbage collection drops superseded items but keeps each key's newest, so a
//! tombstone lives as long as the store: deleted keys (every acknowledged message of a
//! persistent session has its own) fill the store over time, and slow its writes down
//! (garbage collection copies them along). Once tombstones take half the range, or an
//! eighth when a write finds the store full ([`Error::Full`]; [`Store::wants_rewrite`]),
//! the caller starts over ([`Store::start_over`]), writes the live state again (the broker
//! renders it: `Broker::persist_rewrite`), which drops every tombstone, and commits. The
//! state is bounded by half the range; what grows is only the time between two rewrites.
//!
//! No heap: scans collect a few keys at a time ([`BATCH`]) and go through the store again
//! for the next ones, so restoring `n` items reads `O(n²)` item headers from flash (fast
//! on memory-mapped flash; done once at boot).
#![cfg_attr(not(test), no_std)]

use core::ops::Range;

use embedded_storage_async::nor_flash::NorFlash;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage, SerializationError, Value};

/// Longest key stored: `S`, a length, a client id and a filter, or `R` and a topic.
pub const KEY_MAX: usize = 160;
/// Keys a scan collects before it checks them against their newest items.
pub const BATCH: usize = 4;
/// Bytes each item carries besides the key and value: its write number.
pub const OVERHEAD: usize = 4;
/// The store's own key: the generation of the half that holds it (a little-endian `u32`).
/// The core's keys start with a letter, so none is this one.
pub const GENERATION_KEY: &[u8] = &[0];

/// A map key: the core's key bytes.
pub type Key = heapless::Vec<u8, KEY_MAX>;

/// What went wrong.
#[derive(Debug)]
pub enum Error<E> {
    /// The range is not two halves of whole erase pages of the flash, at least two each.
    Range,
    /// A key longer than [`KEY_MAX`] bytes: not stored.
    KeyTooLong,
    /// No room left even after garbage collection: [`Store::start_over`], write the live
    /// state again and [`Store::commit`].
    Full,
    /// The work buffer cannot hold the item (key, value, [`OVERHEAD`], rounded up to the
    /// flash's word).
    BufferTooSmall,
    /// The flash failed or the store's layout is damaged (erase it to start over).
    Store(sequential_storage::Error<E>),
    /// The flash failed to erase a page of the range.
    Erase(E),
}

impl<E> From<sequential_storage::Error<E>> for Error<E> {
    fn from(error: sequential_storage::Error<E>) -> Self {
        match error {
            sequential_storage::Error::FullStorage => Self::Full,
            sequential_storage::Error::BufferTooSmall(_)
            | sequential_storage::Error::SerializationError(SerializationError::BufferTooSmall) => {
                Self::BufferTooSmall
            }
            other => Self::Store(other),
        }
    }
}

/// One item's value: its write number, then the record (empty for a deleted key).
struct Versioned<'a> {
    seq: u32,
    value: &'a [u8],
}

impl<'a> Value<'a> for Versioned<'a> {
    fn serialize_into(&self, buffer: &mut [u8]) -> Result<usize, SerializationError> {
        let len = OVERHEAD + self.value.len();
        let out = buffer
            .get_mut(..len)
            .ok_or(SerializationError::BufferTooSmall)?;
        out[..OVERHEAD].copy_from_slice(&self.seq.to_le_bytes());
        out[OVERHEAD..].copy_from_slice(self.value);
        Ok(len)
    }

    fn deserialize_from(buffer: &'a [u8]) -> Result<(Self, usize), SerializationError> {
        let (seq, value) = buffer
            .split_first_chunk::<OVERHEAD>()
            .ok_or(SerializationError::InvalidFormat)?;
        let seq = u32::from_le_bytes(*seq);
        Ok((Self { seq, value }, buffer.len()))
    }
}

/// The map over one half of the range.
type Map<F> = MapStorage<Key, F, Cache<Uncached, Uncached, Uncached, Key>>;

/// The records in a range of flash `F`.
pub struct Store<F: NorFlash> {
    /// The half being read and written.
    map: Map<F>,
    /// The two halves of the range.
    halves: [Range<u32>; 2],
    /// Which half `map` is over.
    current: usize,
    /// The generation of the state a boot finds: `current`'s, or while a rewrite goes on
    /// the other half's (0: none written yet).
    generation: u32,
    /// `current` is being written from scratch ([`Store::start_over`]); the other half
    /// holds the state until [`Store::commit`].
    rewriting: bool,
    /// The write number of the next item: one more than the highest stored (`None` until
    /// a scan found it).
    next: Option<u32>,
    /// Flash taken by tombstones written since the last erase (and found at boot): an
    /// estimate, since garbage collection drops those a later put superseded.
    tombstones: u32,
}

impl<F: NorFlash> core::fmt::Debug for Store<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store")
            .field("current", &self.current)
            .field("generation", &self.generation)
            .field("rewriting", &self.rewriting)
            .field("next", &self.next)
            .finish()
    }
}

/// Keys found by a scan and the write numbers of the items they were found in.
type Found = heapless::Vec<(Key, u32), BATCH>;

impl<F: NorFlash> Store<F> {
    /// The store in `range` of `flash` (two halves of whole erase pages, at least two
    /// each), as an earlier boot left it: the half of the higher generation (the first
    /// when neither has one). `work` holds an item while the halves are read.
    pub async fn open(
        flash: F,
        range: Range<u32>,
        work: &mut [u8],
    ) -> Result<Self, Error<F::Error>> {
        let len = range.end.checked_sub(range.start).ok_or(Error::Range)?;
        let half = len / 2;
        let halves = [
            range.start..range.start + half,
            range.start + half..range.end,
        ];
        if len % 2 != 0 {
            return Err(Error::Range);
        }
        let [Ok(first), Ok(second)] = halves.clone().map(MapConfig::<F>::try_new) else {
            return Err(Error::Range);
        };
        let mut map = MapStorage::new(flash, first, Cache::new_uncached());
        let first_generation = Self::generation_of(&mut map, work).await;
        let mut map = MapStorage::new(map.destroy().0, second, Cache::new_uncached());
        let second_generation = Self::generation_of(&mut map, work).await;
        // A half without a generation is the first one before any rewrite, or a rewrite
        // cut short while the other half holds the state (or neither has anything).
        let (current, generation) = if second_generation > first_generation {
            (1, second_generation)
        } else {
            let first = MapConfig::try_new(halves[0].clone()).map_err(|_| Error::Range)?;
            map = MapStorage::new(map.destroy().0, first, Cache::new_uncached());
            (0, first_generation)
        };
        Ok(Self {
            map,
            halves,
            current,
            generation: generation.unwrap_or(0),
            rewriting: false,
            next: None,
            tombstones: 0,
        })
    }

    /// The generation `map`'s half holds; `None` for none, or one that cannot be read (a
    /// half a power cut damaged is not the state).
    async fn generation_of(map: &mut Map<F>, work: &mut [u8]) -> Option<u32> {
        let key = Key::from_slice(GENERATION_KEY).ok()?;
        let item = map.fetch_item::<Versioned<'_>>(work, &key).await.ok()??;
        Some(u32::from_le_bytes(item.value.try_into().ok()?))
    }

    /// Stores `value` under `key`, replacing its value; writes nothing if that is its
    /// value already (a sensor retaining the same reading again and again would otherwise
    /// wear the flash for nothing). `value` must not be empty (an empty value is how a
    /// deletion is stored; the core's values never are: a version byte leads them).
    pub async fn put(
        &mut self,
        work: &mut [u8],
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Error<F::Error>> {
        let key = Key::from_slice(key).map_err(|_| Error::KeyTooLong)?;
        let newest = self.map.fetch_item::<Versioned<'_>>(work, &key).await?;
        if newest.is_some_and(|item| item.value == value) {
            return Ok(());
        }
        self.append(work, &key, value).await
    }

    /// Removes `key`: a tombstone if its newest item is live, nothing otherwise (a key
    /// never stored or already deleted costs no flash).
    pub async fn delete(&mut self, work: &mut [u8], key: &[u8]) -> Result<(), Error<F::Error>> {
        let Ok(key) = Key::from_slice(key) else {
            // Never stored (see `put`).
            return Ok(());
        };
        if self.newest(work, &key).await?.is_some_and(|(_, live)| live) {
            self.append(work, &key, &[]).await?;
        }
        Ok(())
    }

    /// Removes every key that starts with `prefix`.
    pub async fn delete_prefix(
        &mut self,
        work: &mut [u8],
        prefix: &[u8],
    ) -> Result<(), Error<F::Error>> {
        let mut from = 0;
        loop {
            let mut found = Found::new();
            let rest = self.scan(work, from, prefix, &mut found).await?;
            let mut wrote = false;
            for (key, seq) in &found {
                // Only the newest item of a key, when live, needs a tombstone: an older
                // one is already superseded.
                if self.newest(work, key).await? == Some((*seq, true)) {
                    self.append(work, key, &[]).await?;
                    wrote = true;
                }
            }
            from = match rest {
                // A write may have moved items (garbage collection): scan again from the
                // start. Each pass that writes removes a live key, so this ends.
                _ if wrote => 0,
                Some(next) => next,
                None => return Ok(()),
            };
        }
    }

    /// Starts writing the state from scratch: erases the other half and writes go there
    /// from now on, while a boot still finds the state in this one until [`Self::commit`].
    /// Called again before the commit, it erases the half being written and begins again
    /// (the committed half is never touched). Returns the store, on the new half even when
    /// the erase failed (the error says so).
    pub async fn start_over(self) -> (Self, Result<(), Error<F::Error>>) {
        let mut store = if self.rewriting {
            self
        } else {
            let other = 1 - self.current;
            let config = match MapConfig::try_new(self.halves[other].clone()) {
                Ok(config) => config,
                // Checked when opened: cannot happen.
                Err(_) => return (self, Err(Error::Range)),
            };
            Self {
                map: MapStorage::new(self.map.destroy().0, config, Cache::new_uncached()),
                current: other,
                rewriting: true,
                ..self
            }
        };
        let erased = store.erase().await;
        (store, erased)
    }

    /// Erases the half being written.
    async fn erase(&mut self) -> Result<(), Error<F::Error>> {
        // A page at a time, letting the executor run other tasks in between: with a blocking
        // flash driver (the ESP32-C3's) erasing the whole half would hold it for seconds.
        // The map keeps no cache to invalidate. Write numbers go on: nothing older remains
        // to be told apart from, but it costs nothing to keep them increasing.
        let range = self.map.flash_range();
        let page = F::ERASE_SIZE as u32;
        for from in (range.start..range.end).step_by(F::ERASE_SIZE) {
            let flash = self.map.flash();
            flash.erase(from, from + page).await.map_err(Error::Erase)?;
            embassy_futures::yield_now().await;
        }
        self.tombstones = 0;
        Ok(())
    }

    /// Makes the half written since [`Self::start_over`] the state a boot finds: writes its
    /// generation, one more than the old half's. Nothing to do when no rewrite is under
    /// way. On error the old half stays the state (commit again later).
    pub async fn commit(&mut self, work: &mut [u8]) -> Result<(), Error<F::Error>> {
        if !self.rewriting {
            return Ok(());
        }
        let generation = self.generation.wrapping_add(1);
        let key = Key::from_slice(GENERATION_KEY).map_err(|_| Error::KeyTooLong)?;
        self.append(work, &key, &generation.to_le_bytes()).await?;
        self.generation = generation;
        self.rewriting = false;
        Ok(())
    }

    /// Whether a rewrite is under way: [`Self::start_over`] without [`Self::commit`] yet.
    pub fn is_rewriting(&self) -> bool {
        self.rewriting
    }

    /// Calls `restore(key, value)` once for every live key with its newest value (the
    /// store's own [`GENERATION_KEY`] aside); returns how many. Call it at boot, before the
    /// first write.
    pub async fn restore(
        &mut self,
        work: &mut [u8],
        mut restore: impl FnMut(&[u8], &[u8]),
    ) -> Result<usize, Error<F::Error>> {
        let highest = self.highest(work).await?;
        self.next = Some(highest.map_or(0, |seq| seq.wrapping_add(1)));
        let mut from = 0;
        let mut restored = 0;
        loop {
            let mut found = Found::new();
            let rest = self.scan(work, from, &[], &mut found).await?;
            for (key, seq) in &found {
                // Of all the items of a key, only its newest has the number `fetch_item`
                // returns: each key is restored once, from its newest value.
                if key.as_slice() == GENERATION_KEY {
                    continue;
                }
                match self.map.fetch_item::<Versioned<'_>>(work, key).await? {
                    Some(item) if item.seq == *seq && !item.value.is_empty() => {
                        restore(key, item.value);
                        restored += 1;
                    }
                    _ => {}
                }
            }
            match rest {
                Some(next) => from = next,
                None => return Ok(restored),
            }
        }
    }

    /// Whether it is time to [`Self::start_over`] and write the live state again: tombstones take
    /// more than half the range, or (`full`: a write returned [`Error::Full`]) more than an
    /// eighth, enough that a rewrite makes room worth an erase of the whole range; a store
    /// full of live records is not rewritten over and over. Garbage collection copies each
    /// key's newest item, tombstone or not, out of a page before erasing it, looking the
    /// key up in every page, so as tombstones fill the store each write costs more (on the
    /// QEMU board a batch of writes went from 20 ms to over a second as the store neared
    /// full).
    pub fn wants_rewrite(&self, full: bool) -> bool {
        let range = self.map.flash_range();
        let share = if full { 8 } else { 2 };
        self.tombstones > (range.end - range.start) / share
    }

    /// How many items (live, superseded and tombstones) the range holds now.
    pub async fn items(&mut self, work: &mut [u8]) -> Result<usize, Error<F::Error>> {
        let mut count = 0;
        let mut items = self.map.fetch_all_items(work).await?;
        while items.next::<Versioned<'_>>(work).await?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    /// The flash, for a caller that needs it back.
    pub fn into_flash(self) -> F {
        self.map.destroy().0
    }

    async fn append(
        &mut self,
        work: &mut [u8],
        key: &Key,
        value: &[u8],
    ) -> Result<(), Error<F::Error>> {
        let seq = match self.next {
            Some(seq) => seq,
            None => self
                .highest(work)
                .await?
                .map_or(0, |seq| seq.wrapping_add(1)),
        };
        self.map
            .store_item(work, key, &Versioned { seq, value })
            .await?;
        // Wrapping takes 2³² writes, far beyond any flash's endurance: numbers stay unique
        // among the items a store holds.
        self.next = Some(seq.wrapping_add(1));
        if value.is_empty() {
            self.tombstones = self.tombstones.saturating_add(Self::tombstone_size(key));
        }
        Ok(())
    }

    /// The highest write number stored; counts the tombstones on the way.
    async fn highest(&mut self, work: &mut [u8]) -> Result<Option<u32>, Error<F::Error>> {
        let mut highest = None;
        let mut tombstones = 0u32;
        let mut items = self.map.fetch_all_items(work).await?;
        while let Some((key, item)) = items.next::<Versioned<'_>>(work).await? {
            highest = highest.max(Some(item.seq));
            if item.value.is_empty() {
                tombstones = tombstones.saturating_add(Self::tombstone_size(&key));
            }
        }
        self.tombstones = tombstones;
        Ok(highest)
    }

    /// Flash a tombstone of `key` takes: the item's header, then the key (with its 2-byte
    /// length) and the write number, in whole words.
    fn tombstone_size(key: &Key) -> u32 {
        let word = F::WRITE_SIZE.max(F::READ_SIZE);
        let data = (2 + key.len() + OVERHEAD).next_multiple_of(word);
        MapStorage::<Key, F, Cache<Uncached, Uncached, Uncached, Key>>::item_overhead_size()
            + data as u32
    }

    /// The write number of `key`'s newest item and whether it is live.
    async fn newest(
        &mut self,
        work: &mut [u8],
        key: &Key,
    ) -> Result<Option<(u32, bool)>, Error<F::Error>> {
        let item = self.map.fetch_item::<Versioned<'_>>(work, key).await?;
        Ok(item.map(|item| (item.seq, !item.value.is_empty())))
    }

    /// Collects into `found` the keys starting with `prefix` of live items from the
    /// `from`th item on, until it is full; returns where to go on (`None`: the end).
    async fn scan(
        &mut self,
        work: &mut [u8],
        from: usize,
        prefix: &[u8],
        found: &mut Found,
    ) -> Result<Option<usize>, Error<F::Error>> {
        let mut items = self.map.fetch_all_items(work).await?;
        let mut at = 0;
        while let Some((key, item)) = items.next::<Versioned<'_>>(work).await? {
            at += 1;
            if at <= from || item.value.is_empty() || !key.starts_with(prefix) {
                continue;
            }
            if found.push((key, item.seq)).is_err() {
                // Full: this item is the first of the next batch.
                return Ok(Some(at - 1));
            }
        }
        Ok(None)
    }
}
