//! Core's own notion of time: milliseconds since an origin the host chooses.
//!
//! Nothing in core reads a clock. Hosts convert from `std::time::Instant` or
//! `embassy_time::Instant` and pass the value in with every call that can depend on time;
//! tests jump it forward to the next [`crate::broker::Broker::poll_timeout`].

use core::fmt;
use core::ops::{Add, Sub};

/// A point in time, in milliseconds since the host's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Instant(pub u64);

/// A span of time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Duration(pub u64);

/// An optional [`Instant`] in eight bytes, where `Option<Instant>` takes sixteen: for the
/// times every session carries (since when it is offline, when its will is due). The last
/// millisecond there is, some 584 million years after the origin, stands for none; an
/// instant that late is kept as the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct MaybeInstant(u64);

impl MaybeInstant {
    /// No instant.
    pub(crate) const NONE: Self = Self(u64::MAX);

    /// The instant, if there is one.
    pub(crate) fn get(self) -> Option<Instant> {
        (self != Self::NONE).then_some(Instant(self.0))
    }
}

impl From<Option<Instant>> for MaybeInstant {
    fn from(at: Option<Instant>) -> Self {
        at.map_or(Self::NONE, |at| Self(at.0.min(u64::MAX - 1)))
    }
}

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self(0);

    /// Milliseconds since the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Self) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Self = Self(0);

    /// A span of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// A span of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(s.saturating_mul(1000))
    }

    /// Milliseconds in the span.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds in the span, rounded up (an expiry of 1.2 s left reports 2 s).
    pub const fn as_secs_ceil(self) -> u64 {
        self.0.div_ceil(1000)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}
