//! Persistence in NOR flash: retained messages and persistent sessions (their
//! subscriptions, queued QoS 1/2 messages, QoS 2 identifiers) as the core's postcard
//! records, in a `fulmar_flash_store::Store` (a `sequential-storage` map written
//! append-only, so flash that cannot write a word twice works too), so they survive a
//! restart.
//!
//! A board runs [`run`] in a task of its own and waits for [`restored`] before it starts
//! serving: [`run`] first feeds every live record to `Broker::restore`, then, forever,
//! applies what the broker reports changed (`Broker::poll_persist`: put, delete, delete a
//! session's keys, reset) whenever a socket task signals activity, outside the broker's
//! lock (flash is slow). Restoring in the same task lets its buffer share that task's
//! memory with the buffers of the writes that follow. Deleted keys leave tombstones
//! in flash; once they take half the store (or it is full), [`run`] has the broker write its
//! live state again (`Broker::persist_rewrite`) into the store's other half, which a boot
//! reads only once the rewrite is committed (the broker reported everything): a power loss
//! during a rewrite finds the state as it was before it.
//!
//! Limits: keys longer than [`KEY_MAX`] bytes (a topic or filter that long) are not
//! persisted; expiry clocks restart at boot (the board has no wall clock); the state gets
//! half the flash range (the other half is where the next rewrite goes).

use core::ops::Range;

use defmt::{info, warn};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embedded_storage_async::nor_flash::NorFlash;
use fulmar_core::broker::PersistOp;
pub use fulmar_flash_store::KEY_MAX;
use fulmar_flash_store::Store;

use crate::capacity::PACKET;
use crate::server::{now, with};

/// Room for one record: the longest key, a retained message of the largest packet, and
/// the record's own fields.
const RECORD: usize = KEY_MAX + PACKET + 256;
/// Room for one item in flash: a record, the store's write number, and the padding to the
/// largest flash word (32 bytes, the STM32H7's).
const WORK: usize = RECORD + fulmar_flash_store::OVERHEAD + 32;

type Error<F> =
    fulmar_flash_store::Error<<F as embedded_storage_async::nor_flash::ErrorType>::Error>;

/// Set when the broker may have changes to persist.
static CHANGED: Signal<CriticalSectionRawMutex, ()> = Signal::new();
/// Set once [`run`] has restored what the store holds (or found it cannot).
static RESTORED: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// Tells [`run`] the broker processed input (it may have durable changes).
pub(crate) fn changed() {
    CHANGED.signal(());
}

/// Persists the broker in `range` of `flash` (whole erase pages, at least two), forever:
/// restores what the store holds, signals [`restored`], then writes the broker's changes.
/// Run it in its own task, started after `server::start`.
pub async fn run<F: NorFlash>(flash: F, range: Range<u32>) -> ! {
    let store = open(flash, range).await;
    RESTORED.signal(());
    match store {
        Some(store) => write_changes(store).await,
        // Nothing can be written: the broker's changes pile up to its bound, then it only
        // keeps asking for a reset.
        None => loop {
            core::future::pending::<()>().await;
        },
    }
}

/// Returns once [`run`] has restored the persisted state into the broker: a board waits for
/// it before it starts serving clients.
pub async fn restored() {
    RESTORED.wait().await;
}

/// The store over `range` of `flash`, with every live record it holds fed to the broker;
/// `None` if the range does not suit the flash. A store found damaged beyond repair starts
/// over in its other half (and the broker is asked to write what it restored so far again).
async fn open<F: NorFlash>(flash: F, range: Range<u32>) -> Option<Store<F>> {
    let mut work = [0u8; WORK];
    let Ok(mut store) = Store::open(flash, range, &mut work).await else {
        warn!("persistence: the flash range is not two halves of whole erase pages, two each");
        return None;
    };
    let restored = store
        .restore(&mut work, |key, value| {
            if let Err(e) = with(|state| state.broker.restore(key, value, now())) {
                warn!("persistence: record not restored: {}", e);
            }
        })
        .await;
    match restored {
        Ok(count) => info!("persistence: {} records restored", count),
        Err(fulmar_flash_store::Error::Store(sequential_storage::Error::Corrupted { .. })) => {
            // sequential-storage could not repair it: start over rather than never
            // persist again.
            warn!("persistence: the store is damaged: starting over in its other half");
            let (fresh, erased) = store.start_over().await;
            store = fresh;
            if let Err(e) = erased {
                warn!("persistence: erase failed: {}", ErrorKind::of(&e));
                return None;
            }
            with(|state| state.broker.persist_rewrite());
        }
        Err(e) => warn!("persistence: cannot read the store: {}", ErrorKind::of(&e)),
    }
    Some(store)
}

/// Writes the broker's durable changes to `store`, forever.
async fn write_changes<F: NorFlash>(mut store: Store<F>) -> ! {
    let mut rendered = [0u8; RECORD];
    let mut work = [0u8; WORK];
    // Set from a rewrite's request until the broker has reported everything: a store full
    // then cannot hold the live state, and asking again would only wear the flash.
    let mut rewriting = false;
    loop {
        CHANGED.wait().await;
        loop {
            let op = match with(|state| state.broker.poll_persist(&mut rendered)) {
                Ok(Some(op)) => op,
                Ok(None) => {
                    // Everything is reported: a rewrite's new half holds the whole state
                    // now, and becomes the one a boot reads.
                    if let Err(e) = store.commit(&mut work).await {
                        warn!("persistence: rewrite not committed: {}", ErrorKind::of(&e));
                    }
                    rewriting = false;
                    break;
                }
                Err(e) => {
                    warn!("persistence: change not rendered: {}", e);
                    break;
                }
            };
            let result;
            (store, result) = apply(store, &mut work, op).await;
            let full = matches!(result, Err(fulmar_flash_store::Error::Full));
            match result {
                Ok(()) | Err(fulmar_flash_store::Error::Full) => {}
                Err(fulmar_flash_store::Error::KeyTooLong) => {
                    warn!("persistence: key over {} bytes not persisted", KEY_MAX);
                }
                Err(e) => warn!("persistence: flash write failed: {}", ErrorKind::of(&e)),
            }
            if !rewriting && store.wants_rewrite(full) {
                // Tombstones of deleted keys fill the store (and slow its writes down): the
                // next ops are a reset (the other half erased) and the live state.
                info!("persistence: store full of deleted keys, writing the live state again");
                rewriting = true;
                with(|state| state.broker.persist_rewrite());
            } else if full {
                warn!("persistence: store full of live records: change not persisted");
            }
        }
    }
}

/// Applies one change; takes the store and gives it back, since a reset moves it to its
/// other half.
async fn apply<F: NorFlash>(
    mut store: Store<F>,
    work: &mut [u8],
    op: PersistOp<'_>,
) -> (Store<F>, Result<(), Error<F>>) {
    let result = match op {
        PersistOp::Put { key, value } => store.put(work, key, value).await,
        PersistOp::Delete { key } => store.delete(work, key).await,
        PersistOp::DeleteSession { prefix } => store.delete_prefix(work, prefix).await,
        PersistOp::Reset => return store.start_over().await,
    };
    (store, result)
}

/// What went wrong in the store, for logs (formatting the error itself would pull
/// `core::fmt` into the firmware).
#[derive(defmt::Format)]
enum ErrorKind {
    KeyTooLong,
    Full,
    Flash,
    Corrupted,
    Other,
}

impl ErrorKind {
    fn of<E>(error: &fulmar_flash_store::Error<E>) -> Self {
        use fulmar_flash_store::Error;
        match error {
            Error::KeyTooLong => Self::KeyTooLong,
            Error::Full => Self::Full,
            Error::Store(sequential_storage::Error::Storage { .. }) | Error::Erase(_) => {
                Self::Flash
            }
            Error::Store(sequential_storage::Error::Corrupted { .. }) => Self::Corrupted,
            _ => Self::Other,
        }
    }
}
