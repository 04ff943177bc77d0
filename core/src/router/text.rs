//! Owned topic levels and share names for the growable router: short ones inside the trie
//! node itself, so comparing a level while matching reads the node and nothing else.
//!
//! With a `Box<str>` per level, every level compared during a match was one more pointer
//! to follow, and at a million subscriptions one more cache miss: a fifth of the time of a
//! route call went to that comparison alone.

use alloc::boxed::Box;

use crate::storage::{CapacityError, Text};

/// Bytes of a level kept inline. Levels are usually short (`site`, `dev`, `42`,
/// `temperature`), and 22 bytes with a one-byte length make the inline form exactly as large
/// as a box with its tag.
const INLINE: usize = 22;

/// A topic level or share name: up to 22 bytes inline, longer ones on the heap.
#[derive(Debug, Clone)]
pub struct CompactText(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Inline(heapless::String<INLINE, u8>),
    Heap(Box<str>),
}

impl Text for CompactText {
    fn from_str(s: &str) -> Result<Self, CapacityError> {
        Ok(Self(match heapless::String::try_from(s) {
            Ok(inline) => Repr::Inline(inline),
            Err(_) => Repr::Heap(s.into()),
        }))
    }

    #[inline]
    fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(s) => s.as_str(),
            Repr::Heap(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_levels_stay_inline_and_long_ones_do_not_fail() {
        for level in ["", "a", "temperature", "0123456789012345678901"] {
            let text = CompactText::from_str(level).unwrap();
            assert!(matches!(text.0, Repr::Inline(_)), "{level}");
            assert_eq!(text.as_str(), level);
        }
        let long = "a-level-longer-than-twenty-two-bytes-ünïcode";
        let text = CompactText::from_str(long).unwrap();
        assert!(matches!(text.0, Repr::Heap(_)));
        assert_eq!(text.as_str(), long);
        assert_eq!(core::mem::size_of::<CompactText>(), 24);
    }
}
