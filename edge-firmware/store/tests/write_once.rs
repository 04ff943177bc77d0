//! The store on a mock flash shaped like the STM32H7's internal flash: 32-byte words that
//! refuse a second write before their page is erased (`WriteCountCheck::OnceOnly`: the
//! mock fails the write), so any rewrite of a word fails the test. Each test checks what
//! [`Store::restore`] hands back, after reopening the flash as a boot would, against a model
//! of the live state.

use std::collections::BTreeMap;

use embassy_futures::block_on;
use fulmar_flash_store::{Error, Store};
use sequential_storage::mock_flash::{MockFlashBase, MockFlashError, WriteCountCheck};

/// 8 pages of 2 KiB in 32-byte words: two halves of 8 KiB.
type Flash = MockFlashBase<8, 32, 64>;
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const WORK: usize = 512;

fn flash() -> Flash {
    // Alignment of the write buffer is not what is tested here.
    Flash::new(WriteCountCheck::OnceOnly, None, false)
}

fn open(flash: Flash) -> Store<Flash> {
    let mut work = [0; WORK];
    block_on(Store::open(flash, Flash::FULL_FLASH_RANGE, &mut work))
        .expect("two halves of whole pages")
}

/// Everything the store restores, each key once (a second time fails the test).
fn restored(store: &mut Store<Flash>) -> Model {
    let mut work = [0; WORK];
    let mut seen = Model::new();
    let count = block_on(store.restore(&mut work, |key, value| {
        let old = seen.insert(key.to_vec(), value.to_vec());
        assert!(old.is_none(), "{key:?} restored twice");
    }))
    .expect("restore");
    assert_eq!(count, seen.len());
    seen
}

/// Cuts the power and boots again on the same flash (a write before a restore finds the
/// write number to go on from by itself).
fn reboot(store: Store<Flash>) -> Store<Flash> {
    open(store.into_flash())
}

/// Reboots and checks that exactly `model` comes back.
fn reboot_and_check(store: Store<Flash>, model: &Model) -> Store<Flash> {
    let mut store = reboot(store);
    assert_eq!(&restored(&mut store), model);
    store
}

fn put(store: &mut Store<Flash>, model: &mut Model, key: &[u8], value: &[u8]) {
    let mut work = [0; WORK];
    block_on(store.put(&mut work, key, value)).expect("put");
    model.insert(key.to_vec(), value.to_vec());
}

fn delete(store: &mut Store<Flash>, model: &mut Model, key: &[u8]) {
    let mut work = [0; WORK];
    block_on(store.delete(&mut work, key)).expect("delete");
    model.remove(key);
}

fn delete_prefix(store: &mut Store<Flash>, model: &mut Model, prefix: &[u8]) {
    let mut work = [0; WORK];
    block_on(store.delete_prefix(&mut work, prefix)).expect("delete_prefix");
    model.retain(|key, _| !key.starts_with(prefix));
}

fn items(store: &mut Store<Flash>) -> usize {
    let mut work = [0; WORK];
    block_on(store.items(&mut work)).expect("items")
}

#[test]
fn put_overwrite_delete_and_session_delete_survive_restarts_exactly() {
    let mut store = open(flash());
    let mut model = Model::new();
    put(&mut store, &mut model, b"Rconfig/mode", b"\x01eco");
    put(&mut store, &mut model, b"Rconfig/gone", b"\x01x");
    put(&mut store, &mut model, b"S\x02k1\x00", b"\x01session k1");
    put(&mut store, &mut model, b"S\x02k1\x01a/#", b"\x01sub");
    put(
        &mut store,
        &mut model,
        b"S\x02k1\x02\x00\x01",
        b"\x01queued",
    );
    put(&mut store, &mut model, b"S\x02k2\x00", b"\x01session k2");
    put(&mut store, &mut model, b"S\x02k2\x01b/+", b"\x01sub");
    // Overwrite: the newest value wins.
    put(&mut store, &mut model, b"Rconfig/mode", b"\x01normal");
    // Delete, and a delete of a key never stored, which writes nothing.
    delete(&mut store, &mut model, b"Rconfig/gone");
    let before = items(&mut store);
    delete(&mut store, &mut model, b"Rnever");
    delete(&mut store, &mut model, b"Rconfig/gone");
    assert_eq!(
        items(&mut store),
        before,
        "nothing to delete, nothing written"
    );
    put(&mut store, &mut model, b"Rconfig/mode", b"\x01normal");
    assert_eq!(
        items(&mut store),
        before,
        "the same value again: nothing written"
    );
    // A session and everything it held.
    delete_prefix(&mut store, &mut model, b"S\x02k1");
    assert_eq!(restored(&mut store), model);

    let mut store = reboot_and_check(store, &model);
    assert_eq!(model.len(), 3, "{model:?}");

    // After a restart, writes still supersede what the earlier boot wrote.
    put(&mut store, &mut model, b"Rconfig/mode", b"\x01eco");
    put(
        &mut store,
        &mut model,
        b"S\x02k1\x00",
        b"\x01session k1 again",
    );
    delete(&mut store, &mut model, b"S\x02k2\x01b/+");
    reboot_and_check(store, &model);
}

/// Starts over in the other half (the firmware's reset).
fn start_over(store: Store<Flash>) -> Store<Flash> {
    let (store, erased) = block_on(store.start_over());
    erased.expect("erase");
    store
}

fn commit(store: &mut Store<Flash>) {
    let mut work = [0; WORK];
    block_on(store.commit(&mut work)).expect("commit");
}

#[test]
fn starting_over_empties_the_store_once_committed_and_it_goes_on() {
    let mut store = open(flash());
    let mut model = Model::new();
    for i in 0..20u8 {
        put(&mut store, &mut model, &[b'R', i], &[1, i]);
    }
    put(&mut store, &mut model, b"Ra", b"\x01before");
    let mut store = start_over(store);
    commit(&mut store);
    model.clear();
    let store = reboot_and_check(store, &model);
    // Writes without a restore first (the store finds where the write numbers are).
    let mut store = reboot(store);
    put(&mut store, &mut model, b"Ra", b"\x01after");
    put(&mut store, &mut model, b"Rb", b"\x01after");
    let mut store = reboot(store);
    put(&mut store, &mut model, b"Ra", b"\x01again");
    reboot_and_check(store, &model);
}

#[test]
fn more_keys_and_versions_than_a_batch_are_each_restored_and_deleted_once() {
    let mut store = open(flash());
    let mut model = Model::new();
    for round in 0..3u8 {
        for i in 0..10u8 {
            put(&mut store, &mut model, &[b'S', 1, b'a', 2, i], &[1, round]);
            put(&mut store, &mut model, &[b'S', 1, b'b', 2, i], &[1, round]);
        }
    }
    assert_eq!(restored(&mut store), model);
    // Stale items of the session come first in flash; its live ones after them.
    delete_prefix(&mut store, &mut model, &[b'S', 1, b'a']);
    assert_eq!(model.len(), 10);
    reboot_and_check(store, &model);
}

#[test]
fn superseded_values_are_collected_without_filling_the_store() {
    let mut store = open(flash());
    let mut model = Model::new();
    // Far more writes than the 8 KiB hold: garbage collection drops the older values.
    for i in 0..1000u32 {
        put(&mut store, &mut model, b"Rsensors/t", &i.to_le_bytes());
        if i % 100 == 0 {
            put(&mut store, &mut model, b"Rother", &i.to_le_bytes());
        }
    }
    reboot_and_check(store, &model);
}

/// What the firmware does when the store wants a rewrite or is full: start over in the
/// other half, write the live state again (the broker renders it after
/// `Broker::persist_rewrite`), commit.
fn rewrite(store: Store<Flash>, model: &Model) -> Store<Flash> {
    let mut work = [0; WORK];
    let mut store = start_over(store);
    for (key, value) in model {
        block_on(store.put(&mut work, key, value)).expect("live state fits");
    }
    commit(&mut store);
    store
}

/// Puts (`value`) or deletes (`None`) `key`; when tombstones take half the store,
/// rewrites it from the live state, as the firmware does, and counts it. The store must
/// want a rewrite before it is full.
fn step(
    mut store: Store<Flash>,
    model: &Model,
    key: &[u8],
    value: Option<&[u8]>,
    rewrites: &mut usize,
) -> Store<Flash> {
    let mut work = [0; WORK];
    let result = match value {
        Some(value) => block_on(store.put(&mut work, key, value)),
        None => block_on(store.delete(&mut work, key)),
    };
    if let Err(e) = result {
        panic!("{key:?}: {e:?} (before a rewrite was wanted)");
    }
    if store.wants_rewrite(false) {
        // The op is done: the live state includes it.
        let mut model = model.clone();
        match value {
            Some(value) => model.insert(key.to_vec(), value.to_vec()),
            None => model.remove(key),
        };
        *rewrites += 1;
        store = rewrite(store, &model);
        // The live state and the generation, no tombstone.
        assert_eq!(
            items(&mut store),
            model.len() + 1,
            "a rewrite leaves no tombstone"
        );
        assert!(!store.wants_rewrite(true));
    }
    store
}

#[test]
fn tombstones_fill_the_store_and_a_rewrite_drops_them() {
    let mut store = open(flash());
    let mut model = Model::new();
    put(&mut store, &mut model, b"Rconfig/mode", b"\x01eco");
    put(&mut store, &mut model, b"S\x02k1\x00", b"\x01session");
    let mut rewrites = 0;
    // Each message of a persistent session has a key of its own: queued, then
    // acknowledged. Every acknowledgement leaves a tombstone the map keeps.
    for seq in 0..400u64 {
        let mut key = b"S\x02k1\x02".to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        store = step(store, &model, &key, Some(b"\x01reading"), &mut rewrites);
        model.insert(key.clone(), b"\x01reading".to_vec());
        store = step(store, &model, &key, None, &mut rewrites);
        model.remove(&key);
        if seq % 50 == 0 {
            store = reboot(store);
            assert_eq!(restored(&mut store), model, "after message {seq}");
        }
    }
    assert!(rewrites >= 2, "the store filled {rewrites} times");
    reboot_and_check(store, &model);
}

#[test]
fn a_store_full_of_live_records_says_so_and_keeps_what_it_holds() {
    let mut store = open(flash());
    let mut model = Model::new();
    let mut work = [0; WORK];
    let value = [1u8; 200];
    let mut full = false;
    for i in 0..100u8 {
        match block_on(store.put(&mut work, &[b'R', i], &value)) {
            Ok(()) => {
                model.insert(vec![b'R', i], value.to_vec());
            }
            Err(Error::Full) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(full, "100 records of 200 bytes do not fit in 8 KiB");
    assert!(
        !store.wants_rewrite(true),
        "no tombstone: a rewrite would not help"
    );
    reboot_and_check(store, &model);
}

/// One change to the store.
#[derive(Clone, Copy, Debug)]
enum Op<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    DeletePrefix(&'a [u8]),
}

impl Op<'_> {
    fn apply(self, store: &mut Store<Flash>) -> Result<(), Error<MockFlashError>> {
        let mut work = [0; WORK];
        match self {
            Self::Put(key, value) => block_on(store.put(&mut work, key, value)),
            Self::Delete(key) => block_on(store.delete(&mut work, key)),
            Self::DeletePrefix(prefix) => block_on(store.delete_prefix(&mut work, prefix)),
        }
    }

    fn model(self, model: &mut Model) {
        match self {
            Self::Put(key, value) => {
                model.insert(key.to_vec(), value.to_vec());
            }
            Self::Delete(key) => {
                model.remove(key);
            }
            Self::DeletePrefix(prefix) => model.retain(|key, _| !key.starts_with(prefix)),
        }
    }
}

/// Whether `found` is `before` with some of the changes that lead to `after` made: each
/// key as it was before or as it is after (a session's keys are deleted one by one).
fn between(found: &Model, before: &Model, after: &Model) -> bool {
    let keys: std::collections::BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .all(|key| found.get(key) == before.get(key) || found.get(key) == after.get(key))
        && found
            .keys()
            .all(|key| before.contains_key(key) || after.contains_key(key))
}

#[test]
fn a_power_cut_at_any_byte_of_a_change_leaves_the_state_before_or_after_it() {
    // Enough history that the last changes make garbage collection move items and erase
    // a page: a cut can land in a migration too.
    let mut history: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..60u8 {
        history.push((vec![b'R', i % 12], vec![1; 40 + usize::from(i)]));
    }
    let session: Vec<(Vec<u8>, Vec<u8>)> = (0..5u8)
        .map(|i| (vec![b'S', 1, b'a', i], vec![1, i]))
        .collect();
    let changes = [
        Op::Put(b"R\x03", b"\x01overwritten"),
        Op::Delete(b"R\x05"),
        Op::DeletePrefix(b"S\x01a"),
        Op::Put(b"Rnew", &[1; 120]),
    ];
    let mut store = open(flash());
    let mut before = Model::new();
    for (key, value) in history.iter().chain(&session) {
        put(&mut store, &mut before, key, value);
    }
    let mut cuts = 0;
    for change in changes {
        let mut after = before.clone();
        change.model(&mut after);
        // The flash as the change finds it, cut after 0, 1, 2... bytes written or erased.
        let snapshot = store.into_flash();
        for cut in 0.. {
            let mut flash = snapshot.clone();
            flash.bytes_until_shutoff = Some(cut);
            let mut cut_short = open(flash);
            let done = change.apply(&mut cut_short).is_ok();
            let mut flash = cut_short.into_flash();
            let finished = flash.bytes_until_shutoff.is_some();
            flash.bytes_until_shutoff = None;
            let mut rebooted = open(flash);
            let found = restored(&mut rebooted);
            assert!(
                between(&found, &before, &after),
                "{change:?} cut after {cut} bytes: {found:?}"
            );
            if done {
                assert_eq!(
                    found, after,
                    "{change:?} reported done, cut after {cut} bytes"
                );
            }
            // The store goes on after the cut, on flash that refuses a second write.
            let mut now = found;
            put(&mut rebooted, &mut now, b"Rafter", b"\x01after the cut");
            reboot_and_check(rebooted, &now);
            if finished {
                break;
            }
            cuts += 1;
        }
        store = open(snapshot);
        change.apply(&mut store).expect("the change without a cut");
        before = after;
    }
    assert!(cuts > 500, "{cuts} cuts");
}

/// Writes `model` into the other half and commits, on flash that loses power after `cut`
/// bytes written or erased (`None`: not at all); returns the flash and whether the rewrite
/// finished.
fn rewrite_cut(mut flash: Flash, model: &Model, cut: Option<u32>) -> (Flash, bool) {
    flash.bytes_until_shutoff = cut;
    let mut work = [0; WORK];
    let store = open(flash);
    let (mut store, erased) = block_on(store.start_over());
    let mut done = erased.is_ok();
    for (key, value) in model {
        done = done && block_on(store.put(&mut work, key, value)).is_ok();
    }
    done = done && block_on(store.commit(&mut work)).is_ok();
    let mut flash = store.into_flash();
    flash.bytes_until_shutoff = None;
    (flash, done)
}

#[test]
fn a_power_cut_at_any_point_of_a_rewrite_loses_nothing() {
    // State with tombstones in the first half; rewritten into the second half, then back
    // into the first (erasing the stale copy there), each cut short at many points.
    let mut store = open(flash());
    let mut model = Model::new();
    for i in 0..24u8 {
        put(&mut store, &mut model, &[b'R', i], &[1; 60]);
    }
    for i in 0..12u8 {
        delete(&mut store, &mut model, &[b'R', i * 2]);
    }
    put(&mut store, &mut model, b"S\x01a", b"\x01session");
    let mut flash = store.into_flash();
    let mut cuts = 0;
    for _ in 0..2 {
        for cut in (0..).step_by(37) {
            let (cut_short, done) = rewrite_cut(flash.clone(), &model, Some(cut));
            let mut rebooted = open(cut_short);
            assert_eq!(
                restored(&mut rebooted),
                model,
                "rewrite cut after {cut} bytes (done: {done})"
            );
            // The store goes on from there, and the next rewrite too.
            let mut now = model.clone();
            put(&mut rebooted, &mut now, b"Rafter", b"\x01after the cut");
            let rebooted = reboot_and_check(rebooted, &now);
            let again = rewrite(rebooted, &now);
            reboot_and_check(again, &now);
            if done {
                break;
            }
            cuts += 1;
        }
        let (whole, done) = rewrite_cut(flash, &model, None);
        assert!(done);
        flash = whole;
    }
    assert!(cuts > 200, "{cuts} cuts");
    reboot_and_check(open(flash), &model);
}

#[test]
fn a_reset_in_the_middle_of_a_rewrite_never_erases_the_committed_half() {
    let mut store = open(flash());
    let mut model = Model::new();
    put(&mut store, &mut model, b"Rkept", b"\x01kept");
    let mut work = [0; WORK];
    let mut store = start_over(store);
    block_on(store.put(&mut work, b"Rhalf", b"\x01half-written")).expect("put");
    // The broker's change list overflowed again: another reset before the commit.
    let mut store = start_over(store);
    assert!(store.is_rewriting());
    block_on(store.put(&mut work, b"Rnew", b"\x01new")).expect("put");
    // Cut before the commit: the old state, whole.
    let store = reboot_and_check(store, &model);
    let mut store = start_over(store);
    let mut new = Model::new();
    put(&mut store, &mut new, b"Rnew", b"\x01new");
    commit(&mut store);
    reboot_and_check(store, &new);
}

#[test]
fn the_mock_refuses_a_second_write_of_a_word() {
    // The check the tests above rely on: rewriting a word (what `remove_item` does to
    // mark an item erased) fails on this flash.
    use embedded_storage_async::nor_flash::NorFlash;
    let mut flash = flash();
    let word = [0xAA; 32];
    block_on(flash.write(0, &word)).expect("first write");
    assert_eq!(
        block_on(flash.write(0, &[0; 32])),
        Err(MockFlashError::NotWritable(0))
    );
}
