//! Where the router keeps its trie nodes' topic levels.
//!
//! The growable router keeps each level in its node ([`CompactText`]: short levels inline,
//! so matching compares without following a pointer). A fixed router would need room for
//! the longest level in every node, most of it unused: `sensors`, `42` and `temperature`
//! are far shorter than the 32 bytes a level may have. So [`LevelPool`] keeps the levels
//! of all nodes back to back in one byte pool, and a node holds only where its level is
//! (four bytes). Freeing a level closes its gap at once and the router moves the levels
//! that followed it ([`LevelStore::COMPACTS`]); the pool never fragments, and removing a
//! node is rare next to matching.

#[cfg(feature = "alloc")]
use super::CompactText;
use crate::storage::CapacityError;
#[cfg(feature = "alloc")]
use crate::storage::Text;

/// The store of a router's topic levels.
pub trait LevelStore {
    /// What a node holds for its level.
    type Level;
    /// An empty store; `const` so a fixed router can sit in a `static`.
    const EMPTY: Self;
    /// Whether [`LevelStore::free`] moves other levels: then the router calls
    /// [`LevelStore::moved`] for every node after freeing one.
    const COMPACTS: bool;
    /// Stores `level`, or fails when there is no room for it.
    fn store(&mut self, level: &str) -> Result<Self::Level, CapacityError>;
    /// The bytes of `level` (UTF-8: they were stored from a `&str`).
    fn bytes<'a>(&'a self, level: &'a Self::Level) -> &'a [u8];
    /// Gives the room of `level` back.
    fn free(&mut self, level: &Self::Level);
    /// Fixes `level` after `freed` was given back, if that moved it.
    fn moved(level: &mut Self::Level, freed: &Self::Level);
}

/// Levels in their nodes (growable router).
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct InNode;

#[cfg(feature = "alloc")]
impl LevelStore for InNode {
    type Level = CompactText;
    const EMPTY: Self = Self;
    const COMPACTS: bool = false;

    fn store(&mut self, level: &str) -> Result<CompactText, CapacityError> {
        CompactText::from_str(level)
    }

    #[inline]
    fn bytes<'a>(&'a self, level: &'a CompactText) -> &'a [u8] {
        level.as_str().as_bytes()
    }

    fn free(&mut self, _: &CompactText) {}

    fn moved(_: &mut CompactText, _: &CompactText) {}
}

/// Where a level is in a [`LevelPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u16,
    len: u16,
}

/// All levels of a fixed router back to back in `N` bytes (at most 65 535).
#[derive(Debug)]
pub struct LevelPool<const N: usize> {
    bytes: heapless::Vec<u8, N>,
}

impl<const N: usize> LevelStore for LevelPool<N> {
    type Level = Span;
    const EMPTY: Self = Self {
        bytes: heapless::Vec::new(),
    };
    const COMPACTS: bool = true;

    fn store(&mut self, level: &str) -> Result<Span, CapacityError> {
        let start = u16::try_from(self.bytes.len()).map_err(|_| CapacityError)?;
        let len = u16::try_from(level.len()).map_err(|_| CapacityError)?;
        start.checked_add(len).ok_or(CapacityError)?;
        self.bytes
            .extend_from_slice(level.as_bytes())
            .map_err(|_| CapacityError)?;
        Ok(Span { start, len })
    }

    #[inline]
    fn bytes<'a>(&'a self, level: &'a Span) -> &'a [u8] {
        let start = usize::from(level.start);
        self.bytes
            .get(start..start + usize::from(level.len))
            .unwrap_or(&[])
    }

    fn free(&mut self, level: &Span) {
        let start = usize::from(level.start);
        let end = start + usize::from(level.len);
        let total = self.bytes.len();
        if level.len == 0 || end > total {
            return;
        }
        self.bytes.copy_within(end..total, start);
        self.bytes.truncate(total - usize::from(level.len));
    }

    #[inline]
    fn moved(level: &mut Span, freed: &Span) {
        if level.start > freed.start {
            level.start -= freed.len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeing_a_level_closes_its_gap_and_moves_the_later_ones() {
        let mut pool = LevelPool::<16>::EMPTY;
        let mut a = pool.store("site").unwrap();
        let b = pool.store("dev").unwrap();
        let mut c = pool.store("42").unwrap();
        assert_eq!(pool.store("too-long-to-fit"), Err(CapacityError));
        pool.free(&b);
        LevelPool::<16>::moved(&mut a, &b);
        LevelPool::<16>::moved(&mut c, &b);
        assert_eq!(pool.bytes(&a), b"site");
        assert_eq!(pool.bytes(&c), b"42");
        let d = pool.store("temp").unwrap();
        assert_eq!(pool.bytes(&d), b"temp");
        assert_eq!(pool.bytes.len(), 10);
    }
}
