//! [`List`]: a sequence inside a packet (properties, topic filters, reason codes) that is
//! either borrowed from validated wire bytes or from the caller's slice.
//!
//! Decoding never allocates: it validates a list once and keeps the bytes; iterating
//! parses each item again on the fly. A caller building a packet to send hands in a slice
//! of items instead. Both forms compare, iterate and encode the same way.

use core::fmt;

use super::wire::Reader;

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// An item that can live in a [`List`]. Implemented by the codec's own item types only.
pub trait ListItem<'a>: sealed::Sealed + Sized + Copy {
    /// Parses the next item from bytes that were validated when the packet was decoded.
    #[doc(hidden)]
    fn read_next(bytes: &mut &'a [u8]) -> Option<Self>;
}

/// Implements [`ListItem`] for a type with a crate-private `read(&mut Reader) -> Result`.
macro_rules! list_item {
    ($ty:ty, $read:path) => {
        impl<'a> $crate::codec::list::sealed::Sealed for $ty {}
        impl<'a> $crate::codec::list::ListItem<'a> for $ty {
            #[inline]
            fn read_next(bytes: &mut &'a [u8]) -> Option<Self> {
                $crate::codec::list::read_with(bytes, $read)
            }
        }
    };
}
pub(crate) use list_item;

/// Runs a fallible item parser over `bytes`, advancing them on success.
#[inline]
pub(crate) fn read_with<'a, T>(
    bytes: &mut &'a [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, super::DecodeError>,
) -> Option<T> {
    if bytes.is_empty() {
        return None;
    }
    let mut reader = Reader::new(bytes);
    let item = read(&mut reader).ok()?;
    *bytes = reader.rest();
    Some(item)
}

/// A sequence of `T` borrowed from a decoded packet or from the caller.
///
/// Held as validated wire bytes followed by caller items, either part possibly empty: a
/// decoded list has only bytes, a built one only items, and a broker forwarding a stored
/// message's properties plus its own has both. Two slices keep the type small, which
/// matters because every [`super::Packet`] carries lists by value.
pub struct List<'a, T> {
    wire: &'a [u8],
    items: &'a [T],
}

impl<'a, T: ListItem<'a>> List<'a, T> {
    /// A list of the caller's items, to encode.
    #[inline]
    pub const fn new(items: &'a [T]) -> Self {
        Self { wire: &[], items }
    }

    /// The empty list.
    #[inline]
    pub const fn empty() -> Self {
        Self {
            wire: &[],
            items: &[],
        }
    }

    /// A list over wire bytes the decoder has validated.
    #[inline]
    pub(crate) const fn from_wire(bytes: &'a [u8]) -> Self {
        Self {
            wire: bytes,
            items: &[],
        }
    }

    /// Validated wire bytes followed by `extra` items.
    #[inline]
    pub(crate) const fn from_wire_and_items(bytes: &'a [u8], extra: &'a [T]) -> Self {
        Self {
            wire: bytes,
            items: extra,
        }
    }

    /// Whether the list has no items.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty() && self.items.is_empty()
    }

    /// The number of items (counted by walking the wire part).
    pub fn len(&self) -> usize {
        if self.wire.is_empty() {
            self.items.len()
        } else {
            self.iter().count()
        }
    }

    /// The items in order.
    #[inline]
    pub fn iter(&self) -> Iter<'a, T> {
        Iter {
            wire: self.wire,
            items: self.items,
        }
    }

    /// The list as validated wire bytes followed by the caller's items; either part may be
    /// empty. Encoding copies the bytes as they are and writes the items after them.
    #[inline]
    pub(crate) fn parts(&self) -> (&'a [u8], &'a [T]) {
        (self.wire, self.items)
    }

    /// The validated wire bytes, if the list holds nothing else. Re-encoding copies them
    /// as they are.
    #[inline]
    pub fn wire_bytes(&self) -> Option<&'a [u8]> {
        self.items.is_empty().then_some(self.wire)
    }
}

// Manual impls: the derives would demand `T: Clone`/`T: Default` for the borrowed slice.
impl<T> Clone for List<'_, T> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for List<'_, T> {}

impl<'a, T: ListItem<'a>> Default for List<'a, T> {
    #[inline]
    fn default() -> Self {
        Self::empty()
    }
}

/// Lists are equal when they hold equal items in the same order, whichever form they are in.
impl<'a, 'b, T: ListItem<'a> + PartialEq<U>, U: ListItem<'b>> PartialEq<List<'b, U>>
    for List<'a, T>
{
    fn eq(&self, other: &List<'b, U>) -> bool {
        let mut mine = self.iter();
        let mut theirs = other.iter();
        loop {
            match (mine.next(), theirs.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }
}

impl<'a, T: ListItem<'a> + Eq> Eq for List<'a, T> {}

impl<'a, T: ListItem<'a> + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl<'a, T: ListItem<'a> + defmt::Format> defmt::Format for List<'a, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "[");
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "{}", item);
        }
        defmt::write!(f, "]");
    }
}

impl<'a, T: ListItem<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<'a, T: ListItem<'a>> IntoIterator for &List<'a, T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// Iterator over a [`List`].
pub struct Iter<'a, T> {
    wire: &'a [u8],
    items: &'a [T],
}

impl<'a, T: ListItem<'a>> Iterator for Iter<'a, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if !self.wire.is_empty() {
            if let Some(item) = T::read_next(&mut self.wire) {
                return Some(item);
            }
            // Validated bytes always parse; should they not, the wire part ends here.
            self.wire = &[];
        }
        let (first, rest) = self.items.split_first()?;
        self.items = rest;
        Some(*first)
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Iter { .. }")
    }
}
