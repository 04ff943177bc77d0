//! Fuzzes the firmware's flash store (`fulmar-flash-store`) with what a damaged flash could
//! hold: arbitrary bytes over a mock flash of 32-byte words that may each be written once
//! between erases (the STM32H7's), then a boot and arbitrary changes.
//!
//! Input: the flash image (short inputs leave the rest erased), then a list of changes
//! (put, delete, delete a prefix, start over, commit) on a few keys, each optionally cut
//! short by a power loss after some bytes written or erased.
//!
//! Invariants (exact state after cuts is the host tests' business, `write_once.rs`):
//! - nothing panics, whatever the flash holds: `open`, `restore` and every change answer
//!   with `Ok` or an error (the mock flash refuses a second write of a word: an error);
//! - every boot hands each key over at most once, and never the store's own generation key.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use embassy_futures::block_on;
use fulmar_flash_store::{GENERATION_KEY, Store};
use libfuzzer_sys::fuzz_target;
use sequential_storage::mock_flash::{MockFlashBase, WriteCountCheck};

/// 8 pages of 2 KiB in 32-byte words: two halves of 8 KiB.
type Flash = MockFlashBase<8, 32, 64>;

const KEYS: [&[u8]; 5] = [
    b"Ra",
    b"Rb/c",
    b"S\x01a\x00",
    b"S\x01a\x01x",
    b"S\x02bb\x00",
];

#[derive(Arbitrary, Debug)]
enum Change {
    Put { key: u8, value: Vec<u8> },
    Delete { key: u8 },
    DeletePrefix { len: u8 },
    StartOver,
    Commit,
}

#[derive(Arbitrary, Debug)]
struct Input {
    image: Vec<u8>,
    changes: Vec<(Change, Option<u16>)>,
}

fn boot(flash: Flash) -> Option<(Store<Flash>, BTreeMap<Vec<u8>, Vec<u8>>)> {
    let mut work = [0u8; 512];
    let mut store = block_on(Store::open(flash, Flash::FULL_FLASH_RANGE, &mut work)).ok()?;
    let mut found = BTreeMap::new();
    let restored = block_on(store.restore(&mut work, |key, value| {
        assert_ne!(
            key, GENERATION_KEY,
            "the store's own key is not handed over"
        );
        let old = found.insert(key.to_vec(), value.to_vec());
        assert!(old.is_none(), "{key:?} handed over twice");
    }));
    if let Ok(count) = restored {
        assert_eq!(count, found.len());
    }
    Some((store, found))
}

fuzz_target!(|input: Input| {
    let mut flash = Flash::new(WriteCountCheck::OnceOnly, None, false);
    let bytes = flash.as_bytes_mut();
    let n = input.image.len().min(bytes.len());
    bytes[..n].copy_from_slice(&input.image[..n]);
    let Some((mut store, _)) = boot(flash) else {
        return;
    };
    for (change, cut) in input.changes.into_iter().take(32) {
        let mut flash = store.into_flash();
        flash.bytes_until_shutoff = cut.map(u32::from);
        let mut work = [0u8; 512];
        let Some((booted, _)) = boot(flash) else {
            return;
        };
        store = booted;
        match change {
            Change::Put { key, value } => {
                let key = KEYS[usize::from(key) % KEYS.len()];
                // The core's values never are empty (a version byte leads them).
                let mut value = value;
                value.truncate(300);
                value.insert(0, 1);
                let _ = block_on(store.put(&mut work, key, &value));
            }
            Change::Delete { key } => {
                let _ = block_on(store.delete(&mut work, KEYS[usize::from(key) % KEYS.len()]));
            }
            Change::DeletePrefix { len } => {
                let prefix = &KEYS[2][..usize::from(len) % 4];
                let _ = block_on(store.delete_prefix(&mut work, prefix));
            }
            Change::StartOver => {
                let (fresh, _) = block_on(store.start_over());
                store = fresh;
            }
            Change::Commit => {
                let _ = block_on(store.commit(&mut work));
            }
        }
        let mut flash = store.into_flash();
        flash.bytes_until_shutoff = None;
        let Some((booted, _)) = boot(flash) else {
            return;
        };
        store = booted;
    }
});
