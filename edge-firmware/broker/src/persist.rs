//! Persistence in NOR flash: retained messages and persistent sessions (their
//! subscriptions, queued QoS 1/2 messages, QoS 2 identifiers) as the core's postcard
//! records, in a `sequential-storage` map, so they survive a restart.
//!
//! The broker reports what changed (`Broker::poll_persist`: put, delete, delete a session's
//! keys, reset); [`run`] applies that to the map whenever a socket task signals activity,
//! outside the broker's lock (flash is slow). At boot, [`restore`] feeds every stored pair
//! to `Broker::restore` before any client connects. A put first removes the key's older
//! value, so the map never holds two versions of a key and restore sees each once.
//!
//! Limits: keys longer than [`KEY_MAX`] bytes (a topic or filter that long) are not
//! persisted; expiry clocks restart at boot (the board has no wall clock).

use core::ops::Range;

use defmt::{info, warn};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use fulmar_core::broker::PersistOp;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};

use crate::capacity::PACKET;
use crate::server::{now, with};

/// Longest key persisted: `S`, a length, a client id and a filter, or `R` and a topic.
pub const KEY_MAX: usize = 160;
/// Room for one record: the longest key, a retained message of the largest packet, and
/// the record's own fields.
const RECORD: usize = KEY_MAX + PACKET + 256;

/// A map key: the core's key bytes.
pub type Key = heapless::Vec<u8, KEY_MAX>;
/// The map of persisted records over flash `F`.
pub type Map<F> = MapStorage<Key, F, Cache<Uncached, Uncached, Uncached, Key>>;

/// Set when the broker may have changes to persist.
static CHANGED: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// Tells [`run`] the broker processed input (it may have durable changes).
pub(crate) fn changed() {
    CHANGED.signal(());
}

/// A map over `range` of `flash` (whole erase pages, at least two), or `None` if the range
/// does not suit the flash.
pub fn open<F: MultiwriteNorFlash>(flash: F, range: Range<u32>) -> Option<Map<F>> {
    let config = MapConfig::try_new(range).ok()?;
    Some(MapStorage::new(flash, config, Cache::new_uncached()))
}

/// Feeds every stored record to the broker; call before the socket tasks start. Returns
/// how many records were restored.
pub async fn restore<F: MultiwriteNorFlash>(map: &mut Map<F>) -> usize {
    let mut scan = [0u8; RECORD];
    let mut item = [0u8; RECORD];
    let mut restored = 0;
    let mut items = match map.fetch_all_items(&mut scan).await {
        Ok(items) => items,
        Err(e) => {
            warn!("persistence: cannot read the store: {}", ErrorKind::of(&e));
            return 0;
        }
    };
    loop {
        match items.next::<&[u8]>(&mut item).await {
            Ok(Some((key, value))) => {
                match with(|state| state.broker.restore(&key, value, now())) {
                    Ok(()) => restored += 1,
                    Err(e) => warn!("persistence: record not restored: {}", e),
                }
            }
            Ok(None) => break,
            Err(e) => {
                warn!("persistence: store read failed: {}", ErrorKind::of(&e));
                break;
            }
        }
    }
    info!("persistence: {} records restored", restored);
    restored
}

/// Writes the broker's durable changes to `map`, forever. Run it in its own task.
pub async fn run<F: MultiwriteNorFlash>(mut map: Map<F>) -> ! {
    let mut rendered = [0u8; RECORD];
    let mut work = [0u8; RECORD];
    loop {
        CHANGED.wait().await;
        loop {
            let op = match with(|state| state.broker.poll_persist(&mut rendered)) {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(e) => {
                    warn!("persistence: change not rendered: {}", e);
                    break;
                }
            };
            if let Err(e) = apply(&mut map, &mut work, op).await {
                warn!("persistence: flash write failed: {}", ErrorKind::of(&e));
            }
        }
    }
}

type Error<F> =
    sequential_storage::Error<<F as embedded_storage_async::nor_flash::ErrorType>::Error>;

async fn apply<F: MultiwriteNorFlash>(
    map: &mut Map<F>,
    work: &mut [u8],
    op: PersistOp<'_>,
) -> Result<(), Error<F>> {
    match op {
        PersistOp::Put { key, value } => {
            let Some(key) = key_of(key) else {
                return Ok(());
            };
            map.remove_item(work, &key).await?;
            map.store_item(work, &key, &value).await
        }
        PersistOp::Delete { key } => match key_of(key) {
            Some(key) => map.remove_item(work, &key).await,
            None => Ok(()),
        },
        PersistOp::DeleteSession { prefix } => delete_prefix(map, work, prefix).await,
        PersistOp::Reset => map.remove_all_items(work).await,
    }
}

/// Removes every key starting with `prefix`, a few at a time (the keys are collected
/// while scanning, removed after).
async fn delete_prefix<F: MultiwriteNorFlash>(
    map: &mut Map<F>,
    work: &mut [u8],
    prefix: &[u8],
) -> Result<(), Error<F>> {
    loop {
        let mut found: heapless::Vec<Key, 4> = heapless::Vec::new();
        {
            let mut scan = [0u8; KEY_MAX + 8];
            let mut items = map.fetch_all_items(&mut scan).await?;
            while let Some((key, _)) = items.next::<&[u8]>(work).await? {
                if key.starts_with(prefix) && found.push(key).is_err() {
                    break;
                }
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        for key in &found {
            map.remove_item(work, key).await?;
        }
    }
}

/// What went wrong in the store, for logs (formatting the error itself would pull
/// `core::fmt` into the firmware).
#[derive(defmt::Format)]
enum ErrorKind {
    Flash,
    Corrupted,
    Full,
    Other,
}

impl ErrorKind {
    fn of<E>(error: &sequential_storage::Error<E>) -> Self {
        match error {
            sequential_storage::Error::Storage { .. } => Self::Flash,
            sequential_storage::Error::Corrupted { .. } => Self::Corrupted,
            sequential_storage::Error::FullStorage => Self::Full,
            _ => Self::Other,
        }
    }
}

fn key_of(key: &[u8]) -> Option<Key> {
    let key = Key::from_slice(key).ok();
    if key.is_none() {
        warn!("persistence: key over {} bytes not persisted", KEY_MAX);
    }
    key
}
