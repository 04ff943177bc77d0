//! Variable-length byte storage for message topics, payloads and properties.
//!
//! A broker keeps messages of any size (retained, queued for offline sessions, in flight),
//! so it needs a heap of bytes. [`FixedBlobs`] is that heap without an allocator: one byte
//! array, blobs appended at the end and found through a handle table, and, when the end is
//! reached, live blobs moved down over the holes (handles stay valid, so there is never
//! fragmentation to leak space). [`GrowableBlobs`] boxes each blob (`alloc`).

use core::num::NonZeroU32;

use crate::storage::{CapacityError, Entry, Slab};

/// Handle of a stored blob.
///
/// Held as the slab handle plus one, so `None` of an `Option` holding a `BlobId` is zero
/// bytes: a broker built in a `static` stays all zero and lands in `.bss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlobId(NonZeroU32);

impl BlobId {
    fn from_handle(handle: u32) -> Self {
        // Slab handles stay below `u32::MAX` (a slab never holds 2^32 values).
        Self(NonZeroU32::MIN.saturating_add(handle))
    }

    fn handle(self) -> u32 {
        self.0.get() - 1
    }
}

/// A store of byte strings.
pub trait BlobStore: Default {
    /// An empty store, usable in `const` context.
    const EMPTY: Self;
    /// Stores a blob of `len` bytes written by `fill`.
    fn insert(&mut self, len: usize, fill: impl FnOnce(&mut [u8]))
    -> Result<BlobId, CapacityError>;
    /// The bytes of a blob.
    fn get(&self, id: BlobId) -> Option<&[u8]>;
    /// The bytes of a blob, mutably.
    fn get_mut(&mut self, id: BlobId) -> Option<&mut [u8]>;
    /// Frees a blob.
    fn remove(&mut self, id: BlobId) -> bool;
    /// Bytes held by live blobs.
    fn used_bytes(&self) -> usize;
    /// Stores a blob of `len` bytes that starts with a copy of the first `prefix_len`
    /// bytes of blob `prefix`; `fill` writes the rest.
    fn insert_prefixed(
        &mut self,
        prefix: BlobId,
        prefix_len: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<BlobId, CapacityError>;
    /// Stores a copy of `bytes`.
    fn insert_copy(&mut self, bytes: &[u8]) -> Result<BlobId, CapacityError> {
        self.insert(bytes.len(), |out| out.copy_from_slice(bytes))
    }
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

/// `BYTES` bytes shared by at most `BLOBS` blobs, with compaction.
pub struct FixedBlobs<const BYTES: usize, const BLOBS: usize> {
    data: [u8; BYTES],
    spans: Slab<Span, heapless::Vec<Entry<Span>, BLOBS>>,
    /// First free byte after the last blob.
    end: usize,
    /// Bytes held by live blobs.
    live: usize,
}

impl<const BYTES: usize, const BLOBS: usize> Default for FixedBlobs<BYTES, BLOBS> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<const BYTES: usize, const BLOBS: usize> core::fmt::Debug for FixedBlobs<BYTES, BLOBS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FixedBlobs")
            .field("blobs", &self.spans.len())
            .field("live", &self.live)
            .field("end", &self.end)
            .field("capacity", &BYTES)
            .finish()
    }
}

impl<const BYTES: usize, const BLOBS: usize> FixedBlobs<BYTES, BLOBS> {
    /// Moves every live blob down over the holes left by removed ones, in the order they
    /// sit in `data` (by start, empty blobs by handle). Each next blob is found by a scan
    /// rather than by sorting a list of them: no sort code and no list on the stack in
    /// the firmware, for BLOBS² comparisons on this rare path (when the end is reached).
    fn compact(&mut self) {
        let mut cursor = 0usize;
        let mut last: Option<(u32, u32)> = None;
        // A moved blob's key only goes down (its start becomes `cursor`), so the scan never
        // meets it again.
        while let Some((start, handle)) = self
            .spans
            .iter()
            .map(|(handle, span)| (span.start, handle))
            .filter(|key| last.is_none_or(|last| *key > last))
            .min()
        {
            last = Some((start, handle));
            let Some(span) = self.spans.get_mut(handle) else {
                continue;
            };
            let len = span.len as usize;
            self.data
                .copy_within(start as usize..start as usize + len, cursor);
            span.start = cursor as u32;
            cursor += len;
        }
        self.end = cursor;
    }
}

impl<const BYTES: usize, const BLOBS: usize> BlobStore for FixedBlobs<BYTES, BLOBS> {
    // All zero bytes: a `static` holding it lands in `.bss`, not in flash.
    const EMPTY: Self = Self {
        data: [0; BYTES],
        spans: Slab::new(),
        end: 0,
        live: 0,
    };

    fn insert(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<BlobId, CapacityError> {
        if self.live + len > BYTES {
            return Err(CapacityError);
        }
        if self.end + len > BYTES {
            self.compact();
        }
        let start = self.end;
        let handle = self.spans.insert(Span {
            start: start as u32,
            len: len as u32,
        })?;
        fill(&mut self.data[start..start + len]);
        self.end += len;
        self.live += len;
        Ok(BlobId::from_handle(handle))
    }

    fn insert_prefixed(
        &mut self,
        prefix: BlobId,
        prefix_len: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<BlobId, CapacityError> {
        let available = self.spans.get(prefix.handle()).ok_or(CapacityError)?.len as usize;
        if prefix_len > available || len < prefix_len || self.live + len > BYTES {
            return Err(CapacityError);
        }
        if self.end + len > BYTES {
            self.compact();
        }
        // Compaction may have moved the prefix: read its place only now.
        let prefix_start = self.spans.get(prefix.handle()).ok_or(CapacityError)?.start as usize;
        let start = self.end;
        let handle = self.spans.insert(Span {
            start: start as u32,
            len: len as u32,
        })?;
        self.data
            .copy_within(prefix_start..prefix_start + prefix_len, start);
        fill(&mut self.data[start + prefix_len..start + len]);
        self.end += len;
        self.live += len;
        Ok(BlobId::from_handle(handle))
    }

    fn get(&self, id: BlobId) -> Option<&[u8]> {
        let span = self.spans.get(id.handle())?;
        self.data
            .get(span.start as usize..(span.start + span.len) as usize)
    }

    fn get_mut(&mut self, id: BlobId) -> Option<&mut [u8]> {
        let span = *self.spans.get(id.handle())?;
        self.data
            .get_mut(span.start as usize..(span.start + span.len) as usize)
    }

    fn remove(&mut self, id: BlobId) -> bool {
        let Some(span) = self.spans.remove(id.handle()) else {
            return false;
        };
        self.live -= span.len as usize;
        // Freeing the last blob gives its bytes back at once.
        if (span.start + span.len) as usize == self.end {
            self.end = span.start as usize;
        }
        if self.spans.is_empty() {
            self.end = 0;
        }
        true
    }

    fn used_bytes(&self) -> usize {
        self.live
    }
}

#[cfg(feature = "alloc")]
type Boxed = alloc::boxed::Box<[u8]>;

/// One heap allocation per blob (`alloc` feature).
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct GrowableBlobs {
    blobs: Slab<Boxed, alloc::vec::Vec<Entry<Boxed>>>,
    live: usize,
}

#[cfg(feature = "alloc")]
impl Default for GrowableBlobs {
    fn default() -> Self {
        Self::EMPTY
    }
}

#[cfg(feature = "alloc")]
impl BlobStore for GrowableBlobs {
    const EMPTY: Self = Self {
        blobs: Slab::new(),
        live: 0,
    };

    fn insert(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<BlobId, CapacityError> {
        let mut bytes = alloc::vec![0u8; len].into_boxed_slice();
        fill(&mut bytes);
        let handle = self.blobs.insert(bytes)?;
        self.live += len;
        Ok(BlobId::from_handle(handle))
    }

    fn insert_prefixed(
        &mut self,
        prefix: BlobId,
        prefix_len: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<BlobId, CapacityError> {
        let source = self.blobs.get(prefix.handle()).ok_or(CapacityError)?;
        let source = source.get(..prefix_len).ok_or(CapacityError)?;
        if len < source.len() {
            return Err(CapacityError);
        }
        let mut bytes = alloc::vec![0u8; len].into_boxed_slice();
        bytes[..source.len()].copy_from_slice(source);
        fill(&mut bytes[source.len()..]);
        let handle = self.blobs.insert(bytes)?;
        self.live += len;
        Ok(BlobId::from_handle(handle))
    }

    fn get(&self, id: BlobId) -> Option<&[u8]> {
        self.blobs.get(id.handle()).map(|b| &b[..])
    }

    fn get_mut(&mut self, id: BlobId) -> Option<&mut [u8]> {
        self.blobs.get_mut(id.handle()).map(|b| &mut b[..])
    }

    fn remove(&mut self, id: BlobId) -> bool {
        match self.blobs.remove(id.handle()) {
            Some(bytes) => {
                self.live -= bytes.len();
                true
            }
            None => false,
        }
    }

    fn used_bytes(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise<B: BlobStore>(store: &mut B) {
        let a = store.insert_copy(b"alpha").unwrap();
        let b = store.insert_copy(b"bravo!").unwrap();
        let c = store.insert_copy(b"charlie").unwrap();
        assert!(store.remove(b));
        assert!(!store.remove(b));
        assert_eq!(store.get(a), Some(&b"alpha"[..]));
        assert_eq!(store.get(c), Some(&b"charlie"[..]));
        assert_eq!(store.get(b), None);
        assert_eq!(store.used_bytes(), 12);
        let e = store
            .insert_prefixed(a, 5, 8, |rest| rest.copy_from_slice(b"/x/"))
            .unwrap();
        assert_eq!(store.get(e), Some(&b"alpha/x/"[..]));
        assert!(store.remove(e));
    }

    #[test]
    fn fixed_blobs_compact_instead_of_fragmenting() {
        let mut store = FixedBlobs::<24, 4>::default();
        exercise(&mut store);
        // 12 live bytes, end at 18: a 10-byte blob only fits after compaction.
        let d = store.insert_copy(b"0123456789").unwrap();
        assert_eq!(store.get(d), Some(&b"0123456789"[..]));
        assert_eq!(store.insert_copy(b"abc"), Err(CapacityError));
        assert_eq!(store.used_bytes(), 22);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn growable_blobs() {
        exercise(&mut GrowableBlobs::default());
    }
}
