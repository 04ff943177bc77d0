//! Received bytes the core has not consumed yet, per socket: a small buffer of its own
//! ([`INBOX`] bytes) and, while a larger packet arrives, one of [`LARGE_BUFFERS`] buffers of
//! [`PACKET`] bytes that all sockets share.
//!
//! The core takes whole packets only, so a socket must be able to hold a packet of the
//! largest size until its last byte arrives. Reserving that for every socket would cost
//! [`PACKET`] bytes each while almost all packets are a few dozen bytes, so a socket holds
//! its own small buffer and borrows a large one only for a packet that does not fit. A
//! borrowed buffer goes back to the pool as soon as what is left fits the small one, when
//! the connection ends, or when its packet does not complete within [`LARGE_HOLD`] (so a
//! client trickling a large packet cannot keep other clients' large packets out for long).
//! A socket waiting for a large buffer does not read: TCP holds its client back.

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Instant};
use static_cell::ConstStaticCell;

use crate::capacity::{INBOX, LARGE_BUFFERS, PACKET};

/// A shared buffer, lent to one socket.
pub(crate) type Large = &'static mut [u8; PACKET];

/// Longest a socket may hold a large buffer without the core consuming a packet from it.
pub(crate) const LARGE_HOLD: Duration = Duration::from_secs(10);

/// The shared buffers: all zero bytes, in `.bss`.
static STORAGE: ConstStaticCell<[[u8; PACKET]; LARGE_BUFFERS]> =
    ConstStaticCell::new([[0; PACKET]; LARGE_BUFFERS]);

/// The shared buffers not lent to a socket.
static FREE: Channel<CriticalSectionRawMutex, Large, LARGE_BUFFERS> = Channel::new();

/// Puts the shared buffers in the pool. Call once, before the socket tasks run.
pub(crate) fn init() {
    if let Some(buffers) = STORAGE.try_take() {
        for buffer in buffers.iter_mut() {
            // Room for every buffer: the channel holds LARGE_BUFFERS.
            let _ = FREE.try_send(buffer);
        }
    }
}

/// Waits until a shared buffer is free and takes it. Cancel-safe: a buffer is only taken
/// when this completes.
pub(crate) async fn borrow() -> Large {
    FREE.receive().await
}

/// One socket's received bytes not consumed yet.
pub(crate) struct Inbox {
    small: [u8; INBOX],
    large: Option<Large>,
    filled: usize,
    /// When the large buffer was borrowed or last gave the core a packet.
    large_since: Instant,
}

impl Inbox {
    /// An empty inbox.
    pub(crate) const fn new() -> Self {
        Self {
            small: [0; INBOX],
            large: None,
            filled: 0,
            large_since: Instant::from_ticks(0),
        }
    }

    /// Forgets the held bytes (the connection ended) and gives back a large buffer.
    pub(crate) fn clear(&mut self) {
        self.filled = 0;
        self.give_back();
    }

    fn give_back(&mut self) {
        if let Some(large) = self.large.take() {
            // Never full: at most LARGE_BUFFERS buffers exist.
            let _ = FREE.try_send(large);
        }
    }

    /// The bytes held, oldest first.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.large {
            Some(large) => &large[..self.filled],
            None => &self.small[..self.filled],
        }
    }

    /// Room after the held bytes, to read into; empty when full.
    pub(crate) fn room(&mut self) -> &mut [u8] {
        match &mut self.large {
            Some(large) => &mut large[self.filled..],
            None => &mut self.small[self.filled..],
        }
    }

    /// `n` bytes were read into [`Inbox::room`].
    pub(crate) fn add(&mut self, n: usize) {
        self.filled += n;
    }

    /// Whether no byte is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Whether the buffer in use is full.
    pub(crate) fn is_full(&self) -> bool {
        self.room_len() == 0
    }

    fn room_len(&self) -> usize {
        self.large.as_ref().map_or(INBOX, |l| l.len()) - self.filled
    }

    /// Whether a shared buffer is in use.
    pub(crate) fn is_large(&self) -> bool {
        self.large.is_some()
    }

    /// The core consumed the first `used` held bytes: the rest moves to the front, back
    /// into the small buffer when it fits there.
    pub(crate) fn consume(&mut self, used: usize) {
        let filled = self.filled;
        match &mut self.large {
            Some(large) => {
                large.copy_within(used..filled, 0);
                if used > 0 {
                    self.large_since = Instant::now();
                }
            }
            None => self.small.copy_within(used..filled, 0),
        }
        self.filled -= used;
        if let Some(large) = &self.large
            && self.filled <= INBOX
        {
            self.small[..self.filled].copy_from_slice(&large[..self.filled]);
            self.give_back();
        }
    }

    /// Moves the held bytes into `large`, borrowed with [`borrow`].
    pub(crate) fn use_large(&mut self, large: Large) {
        self.give_back();
        large[..self.filled].copy_from_slice(&self.small[..self.filled]);
        self.large = Some(large);
        self.large_since = Instant::now();
    }

    /// When the large buffer in use must have given the core a packet ([`LARGE_HOLD`]).
    pub(crate) fn large_deadline(&self) -> Option<Instant> {
        self.large.as_ref().map(|_| self.large_since + LARGE_HOLD)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.give_back();
    }
}
