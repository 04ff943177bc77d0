//! An open-addressing hash index from a 32-bit hash to a `u32` handle, over any
//! [`Storage`]: how the router finds a child level or a subscription, and the broker a
//! client identifier or a retained topic, in O(1) without an allocator.
//!
//! The index stores only hashes and handles; the caller decides whether a handle is the one
//! it looks for (`eq`), so keys live once, in the router's own slabs. Linear probing with
//! tombstones; a growable store rebuilds (usually doubling) at 1/2 load, a fixed one refuses inserts beyond
//! 7/8 of its power-of-two capacity so probes stay short.

use crate::storage::{CapacityError, Storage};

const EMPTY: u32 = u32::MAX;
const TOMBSTONE: u32 = u32::MAX - 1;

/// One place of the index.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    hash: u32,
    handle: u32,
}

const VACANT: Slot = Slot {
    hash: 0,
    handle: EMPTY,
};

/// Hash index over storage `S`.
#[derive(Debug)]
pub(crate) struct Index<S> {
    slots: S,
    /// Live entries.
    len: usize,
    /// Live entries plus tombstones: what lengthens probes.
    used: usize,
}

impl<S: Storage<Slot>> Default for Index<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Storage<Slot>> Index<S> {
    /// An empty index. It holds no slot yet: a fixed table is laid out on its first
    /// insert, so a new index is all zero bytes and costs nothing to build (in `const`
    /// context, or in place in a `static` that lands in `.bss`).
    pub(crate) const fn new() -> Self {
        Self {
            slots: S::EMPTY,
            len: 0,
            used: 0,
        }
    }

    /// Lays out a fixed table at the largest power of two its storage holds.
    fn lay_out(&mut self, capacity: usize) {
        let size = if capacity == 0 {
            0
        } else {
            1 << capacity.ilog2()
        };
        for _ in 0..size {
            if self.slots.push(VACANT).is_err() {
                break;
            }
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.as_slice().len().wrapping_sub(1)
    }

    /// The handle stored under `hash` for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let slots = self.slots.as_slice();
        if slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        for _ in 0..slots.len() {
            let slot = slots[i];
            if slot.handle == EMPTY {
                return None;
            }
            if slot.handle != TOMBSTONE && slot.hash == hash && eq(slot.handle) {
                return Some(slot.handle);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Adds `handle` under `hash`; the caller has checked it is not present.
    pub(crate) fn insert(&mut self, hash: u32, handle: u32) -> Result<(), CapacityError> {
        let mut size = self.slots.as_slice().len();
        if let Some(capacity) = S::FIXED_CAPACITY
            && size == 0
        {
            self.lay_out(capacity);
            size = self.slots.as_slice().len();
        }
        match S::FIXED_CAPACITY {
            Some(_) if (self.len + 1) * 8 > size * 7 => return Err(CapacityError),
            // Many tombstones in a fixed table: rebuild in place to shorten probes.
            Some(_) if (self.used + 1) * 8 > size * 7 => {
                purge_tombstones(self.slots.as_mut_slice());
                self.used = self.len;
            }
            // A growable table rebuilds at half load: larger if it is really filling up,
            // at the same size if tombstones are what fills it.
            None if (self.used + 1) * 2 > size => {
                let live_heavy = (self.len + 1) * 4 > size;
                self.rebuild(if live_heavy { (size * 2).max(16) } else { size })?
            }
            _ => {}
        }
        let mask = self.mask();
        let slots = self.slots.as_mut_slice();
        let mut i = hash as usize & mask;
        loop {
            let slot = &mut slots[i];
            if slot.handle == EMPTY || slot.handle == TOMBSTONE {
                if slot.handle == EMPTY {
                    self.used += 1;
                }
                *slot = Slot { hash, handle };
                self.len += 1;
                return Ok(());
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes the handle under `hash` for which `eq` holds.
    pub(crate) fn remove(&mut self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let slots = self.slots.as_mut_slice();
        if slots.is_empty() {
            return None;
        }
        let mut i = hash as usize & mask;
        for _ in 0..slots.len() {
            let slot = slots[i];
            if slot.handle == EMPTY {
                return None;
            }
            if slot.handle != TOMBSTONE && slot.hash == hash && eq(slot.handle) {
                slots[i].handle = TOMBSTONE;
                self.len -= 1;
                return Some(slot.handle);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Rebuilds a growable table with `size` places and every live entry.
    fn rebuild(&mut self, size: usize) -> Result<(), CapacityError> {
        let mut bigger = S::default();
        for _ in 0..size {
            bigger.push(VACANT)?;
        }
        let old = core::mem::replace(&mut self.slots, bigger);
        self.reinsert(old.as_slice());
        Ok(())
    }

    fn reinsert(&mut self, from: &[Slot]) {
        self.len = 0;
        self.used = 0;
        let mask = self.mask();
        let slots = self.slots.as_mut_slice();
        for slot in from {
            if slot.handle == EMPTY || slot.handle == TOMBSTONE {
                continue;
            }
            let mut i = slot.hash as usize & mask;
            while slots[i].handle != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = *slot;
            self.len += 1;
            self.used += 1;
        }
    }
}

/// Turns the tombstones of a fixed table into empty places, moving live entries back
/// toward their home places so each stays reachable. In place (no copy of the table on the
/// stack) and not generic over the table's capacity, so indexes of several sizes share
/// this code.
///
/// Entries are taken in probe order from a place that was empty before (so no probe run
/// crosses the starting point), each lifted out and put back at the first empty place from
/// its home: that place is at most where it was, and emptying it later never opens a gap
/// before an entry already put back.
#[inline(never)]
fn purge_tombstones(slots: &mut [Slot]) {
    let Some(start) = slots.iter().position(|s| s.handle == EMPTY) else {
        // Cannot happen: a fixed table is purged before tombstones and entries fill it.
        return;
    };
    for slot in slots.iter_mut() {
        if slot.handle == TOMBSTONE {
            *slot = VACANT;
        }
    }
    let mask = slots.len() - 1;
    for k in 1..=slots.len() {
        let i = (start + k) & mask;
        let slot = slots[i];
        if slot.handle == EMPTY {
            continue;
        }
        slots[i] = VACANT;
        let mut j = slot.hash as usize & mask;
        while slots[j].handle != EMPTY {
            j = (j + 1) & mask;
        }
        slots[j] = slot;
    }
}

/// A seeded hash of a parent handle and a byte string (a topic level or a share name).
///
/// Keys come from clients, so the host seeds the hash with a random value at start to keep
/// a client from choosing colliding levels on purpose.
#[inline]
pub(crate) fn hash_key(seed: u64, parent: u32, bytes: &[u8]) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (u64::from(parent).wrapping_mul(K)) ^ (bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    h = (h ^ tail_word(chunks.remainder())).wrapping_mul(K);
    // Final avalanche (the murmur3 64-bit finaliser) so low bits depend on every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h as u32
}

/// The last 0 to 7 bytes of a key as one word, every byte included (the length is hashed
/// separately). Fixed-size loads only: copying a variable-length tail into a buffer and
/// reading it back costs a `memcpy` call and a stalled load, which was a third of a
/// router lookup on short topic levels.
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    match (rest.first_chunk::<4>(), rest.last_chunk::<4>()) {
        // Two overlapping 4-byte reads cover 4 to 7 bytes.
        (Some(lo), Some(hi)) => {
            u64::from(u32::from_le_bytes(*lo)) | u64::from(u32::from_le_bytes(*hi)) << 32
        }
        // Bytes 0, len/2 and len-1 cover 1 to 3 bytes.
        _ => match (rest.first(), rest.get(rest.len() / 2), rest.last()) {
            (Some(&a), Some(&mid), Some(&last)) => {
                u64::from(a) | u64::from(mid) << 8 | u64::from(last) << 16
            }
            _ => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_index_finds_removes_and_refuses_when_full() {
        let mut index: Index<heapless::Vec<Slot, 8>> = Index::default();
        for handle in 0..7 {
            index.insert(handle % 3, handle).unwrap();
        }
        assert_eq!(index.insert(9, 9), Err(CapacityError));
        assert_eq!(index.find(1, |h| h == 4), Some(4));
        assert_eq!(index.remove(1, |h| h == 4), Some(4));
        assert_eq!(index.find(1, |h| h == 4), None);
        assert_eq!(index.find(1, |h| h == 1), Some(1));
        // Churn through tombstones without running out of room.
        for round in 0..100 {
            index.insert(1, 100 + round).unwrap();
            assert_eq!(index.remove(1, |h| h == 100 + round), Some(100 + round));
        }
    }

    #[test]
    fn purging_tombstones_closes_the_gaps_they_leave_in_probe_runs() {
        let mut index: Index<heapless::Vec<Slot, 16>> = Index::default();
        // A run from the last place round to the first ones: places 15, 0, 1, 2, 3.
        for handle in 0..5 {
            index.insert(15, handle).unwrap();
        }
        // Its head becomes a tombstone; fresh places are taken and freed until the table
        // is purged (more than 7/8 of its places used).
        assert_eq!(index.remove(15, |h| h == 0), Some(0));
        for hash in 4..14 {
            index.insert(hash, 100 + hash).unwrap();
            assert_eq!(index.remove(hash, |h| h == 100 + hash), Some(100 + hash));
        }
        assert!(index.used < 10, "never purged: {}", index.used);
        for handle in 1..5 {
            assert_eq!(index.find(15, |h| h == handle), Some(handle));
        }
    }

    #[test]
    fn purging_tombstones_keeps_every_live_entry_reachable() {
        // Colliding and wrapping probe runs (hashes near the end of a 16-place table),
        // entries removed all over them, churn that purges many times.
        let mut index: Index<heapless::Vec<Slot, 16>> = Index::default();
        let mut live: Vec<(u32, u32)> = Vec::new();
        let mut next = 0u32;
        for round in 0..500u32 {
            let hash = [15, 14, 0, 1, 15, 7][round as usize % 6] + (round % 7) * 16;
            if live.len() < 13 {
                index.insert(hash, next).unwrap();
                live.push((hash, next));
                next += 1;
            }
            if round % 3 == 0 {
                let (hash, handle) = live.remove(round as usize * 7 % live.len());
                assert_eq!(index.remove(hash, |h| h == handle), Some(handle));
            }
            for &(hash, handle) in &live {
                assert_eq!(index.find(hash, |h| h == handle), Some(handle), "{round}");
            }
            assert_eq!(index.len, live.len());
        }
    }

    #[test]
    fn hash_depends_on_parent_and_bytes() {
        assert_ne!(hash_key(1, 0, b"a"), hash_key(1, 1, b"a"));
        assert_ne!(hash_key(1, 0, b"a"), hash_key(1, 0, b"b"));
        assert_ne!(hash_key(1, 0, b"a"), hash_key(2, 0, b"a"));
        assert_eq!(hash_key(7, 3, b"sensors"), hash_key(7, 3, b"sensors"));
    }

    #[test]
    fn hash_depends_on_every_byte_of_every_length() {
        let base = *b"abcdefghijklmnopqr";
        for len in 0..base.len() {
            let hash = hash_key(5, 1, &base[..len]);
            assert_ne!(hash, hash_key(5, 1, &base[..len + 1]), "length {len}");
            for i in 0..len {
                let mut changed = base;
                changed[i] ^= 0x20;
                assert_ne!(
                    hash,
                    hash_key(5, 1, &changed[..len]),
                    "length {len}, byte {i}"
                );
            }
        }
    }
}
