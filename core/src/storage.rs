//! Storage back-ends: the same algorithms run over fixed-capacity `heapless` buffers (no
//! allocator, capacity chosen at build time) or growable `alloc` vectors.
//!
//! [`Storage`] is the one seam between an algorithm and its memory. [`Slab`] builds stable
//! `u32` handles with a free list on top of it, which is what the router and the broker use
//! for nodes, subscriptions and sessions. A full fixed-capacity store answers
//! [`CapacityError`], which callers turn into the protocol's "quota exceeded" answers.

use core::fmt;
use core::marker::PhantomData;

/// A store has no room for another item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CapacityError;

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("storage capacity exceeded")
    }
}

impl core::error::Error for CapacityError {}

/// A contiguous, appendable sequence: `heapless::Vec<T, N>` or `alloc::vec::Vec<T>`.
pub trait Storage<T>: Default {
    /// The most items the store can ever hold, or `None` if it grows on demand.
    const FIXED_CAPACITY: Option<usize>;
    /// An empty store, usable in `const` context (so a whole broker can be a `static`).
    const EMPTY: Self;
    /// Appends `value`; a full store drops it and says so.
    fn push(&mut self, value: T) -> Result<(), CapacityError>;
    /// The items.
    fn as_slice(&self) -> &[T];
    /// The items, mutably.
    fn as_mut_slice(&mut self) -> &mut [T];
    /// Shortens to `len` items.
    fn truncate(&mut self, len: usize);
}

impl<T, const N: usize> Storage<T> for heapless::Vec<T, N> {
    const FIXED_CAPACITY: Option<usize> = Some(N);
    const EMPTY: Self = heapless::Vec::new();
    #[inline]
    fn push(&mut self, value: T) -> Result<(), CapacityError> {
        heapless::Vec::push(self, value).map_err(|_| CapacityError)
    }
    #[inline]
    fn as_slice(&self) -> &[T] {
        self
    }
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        heapless::Vec::truncate(self, len)
    }
}

#[cfg(feature = "alloc")]
impl<T> Storage<T> for alloc::vec::Vec<T> {
    const FIXED_CAPACITY: Option<usize> = None;
    const EMPTY: Self = alloc::vec::Vec::new();
    #[inline]
    fn push(&mut self, value: T) -> Result<(), CapacityError> {
        alloc::vec::Vec::push(self, value);
        Ok(())
    }
    #[inline]
    fn as_slice(&self) -> &[T] {
        self
    }
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        alloc::vec::Vec::truncate(self, len)
    }
}

/// One place of a [`Slab`].
#[derive(Debug, Clone)]
pub enum Entry<T> {
    /// Holds a value.
    Occupied(T),
    /// Free; links to the next free place.
    Vacant(Option<u32>),
}

/// Values with stable `u32` handles, reusing freed places, over any [`Storage`].
pub struct Slab<T, S = DefaultStorage<T>> {
    entries: S,
    free: Option<u32>,
    len: usize,
    _marker: PhantomData<T>,
}

/// What [`Slab`] uses when no storage is named: a `Vec` with `alloc`.
#[cfg(feature = "alloc")]
pub type DefaultStorage<T> = alloc::vec::Vec<Entry<T>>;
/// What [`Slab`] uses when no storage is named: 16 places without `alloc`.
#[cfg(not(feature = "alloc"))]
pub type DefaultStorage<T> = heapless::Vec<Entry<T>, 16>;

impl<T, S: Storage<Entry<T>>> Default for Slab<T, S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug, S: Storage<Entry<T>>> fmt::Debug for Slab<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T, S: Storage<Entry<T>>> Slab<T, S> {
    /// An empty slab; `const` so fixed-capacity stores can be built in a `static`.
    pub const fn new() -> Self {
        Self {
            entries: S::EMPTY,
            free: None,
            len: 0,
            _marker: PhantomData,
        }
    }

    /// Number of values held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `n` more values fit (always, for growable storage).
    #[inline]
    pub fn has_room_for(&self, n: usize) -> bool {
        S::FIXED_CAPACITY.is_none_or(|capacity| capacity.saturating_sub(self.len) >= n)
    }

    /// Stores `value` and returns its handle.
    pub fn insert(&mut self, value: T) -> Result<u32, CapacityError> {
        if let Some(index) = self.free {
            let entry = self
                .entries
                .as_mut_slice()
                .get_mut(index as usize)
                .ok_or(CapacityError)?;
            let Entry::Vacant(next) = *entry else {
                return Err(CapacityError);
            };
            *entry = Entry::Occupied(value);
            self.free = next;
            self.len += 1;
            return Ok(index);
        }
        let handle = u32::try_from(self.entries.as_slice().len()).map_err(|_| CapacityError)?;
        self.entries.push(Entry::Occupied(value))?;
        self.len += 1;
        Ok(handle)
    }

    /// Removes and returns the value at `handle`.
    pub fn remove(&mut self, handle: u32) -> Option<T> {
        let entry = self.entries.as_mut_slice().get_mut(handle as usize)?;
        if matches!(entry, Entry::Vacant(_)) {
            return None;
        }
        let Entry::Occupied(value) = core::mem::replace(entry, Entry::Vacant(self.free)) else {
            return None;
        };
        self.free = Some(handle);
        self.len -= 1;
        Some(value)
    }

    /// The value at `handle`.
    #[inline]
    pub fn get(&self, handle: u32) -> Option<&T> {
        match self.entries.as_slice().get(handle as usize)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// The value at `handle`, mutably.
    #[inline]
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut T> {
        match self.entries.as_mut_slice().get_mut(handle as usize)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// One past the highest handle ever handed out: every live handle is below it.
    #[inline]
    pub fn handle_bound(&self) -> u32 {
        self.entries.as_slice().len() as u32
    }

    /// Every value with its handle, in handle order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.entries
            .as_slice()
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Entry::Occupied(value) => Some((i as u32, value)),
                Entry::Vacant(_) => None,
            })
    }

    /// Every value, mutably, in handle order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries
            .as_mut_slice()
            .iter_mut()
            .filter_map(|e| match e {
                Entry::Occupied(value) => Some(value),
                Entry::Vacant(_) => None,
            })
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.entries.truncate(0);
        self.free = None;
        self.len = 0;
    }
}

/// A handle into a [`Slab`], or none: four bytes where `Option<u32>` takes eight. Trie
/// nodes, subscriptions and queue entries are mostly links, so this is a large part of
/// their size, which is RAM on a microcontroller and cache lines on a server. `u32::MAX`
/// stands for none: no slab hands it out (it would need 2^32 entries first), and the hash
/// indexes reserve it too.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link(u32);

impl Link {
    pub(crate) const NONE: Self = Self(u32::MAX);

    #[inline]
    pub(crate) const fn to(handle: u32) -> Self {
        Self(handle)
    }

    #[inline]
    pub(crate) const fn get(self) -> Option<u32> {
        if self.0 == u32::MAX {
            None
        } else {
            Some(self.0)
        }
    }

    #[inline]
    pub(crate) const fn is_none(self) -> bool {
        self.0 == u32::MAX
    }

    /// The handle, leaving none in its place.
    #[inline]
    pub(crate) fn take(&mut self) -> Option<u32> {
        core::mem::replace(self, Self::NONE).get()
    }
}

impl From<Option<u32>> for Link {
    #[inline]
    fn from(handle: Option<u32>) -> Self {
        handle.map_or(Self::NONE, Self::to)
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::NONE
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Owned text (topic levels, share names): `heapless::String<N>` or `Box<str>`.
pub trait Text {
    /// Copies `s`, or fails when it does not fit.
    fn from_str(s: &str) -> Result<Self, CapacityError>
    where
        Self: Sized;
    /// The text.
    fn as_str(&self) -> &str;
}

impl<const N: usize> Text for heapless::String<N> {
    fn from_str(s: &str) -> Result<Self, CapacityError> {
        let mut text = heapless::String::new();
        text.push_str(s).map_err(|_| CapacityError)?;
        Ok(text)
    }
    #[inline]
    fn as_str(&self) -> &str {
        self
    }
}

#[cfg(feature = "alloc")]
impl Text for alloc::boxed::Box<str> {
    fn from_str(s: &str) -> Result<Self, CapacityError> {
        Ok(s.into())
    }
    #[inline]
    fn as_str(&self) -> &str {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_slab_reuses_freed_handles_and_reports_full() {
        let mut slab: Slab<u8, heapless::Vec<Entry<u8>, 2>> = Slab::new();
        let a = slab.insert(1).unwrap();
        let b = slab.insert(2).unwrap();
        assert_eq!(slab.insert(3), Err(CapacityError));
        assert_eq!(slab.remove(a), Some(1));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.insert(4), Ok(a));
        assert_eq!(slab.get(b), Some(&2));
        assert_eq!(slab.len(), 2);
        assert_eq!(
            slab.iter()
                .map(|(_, v)| *v)
                .collect::<heapless::Vec<u8, 2>>(),
            [4, 2]
        );
    }
}
