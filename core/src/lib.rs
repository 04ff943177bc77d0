//! # fulmar-core
//!
//! The protocol heart of Fulmar, an MQTT broker family that runs the same code on a
//! microcontroller, a Linux gateway and a cloud cluster.
//!
//! The crate is `#![no_std]` and needs no allocator. It is *sans-IO*: it never opens a
//! socket, reads a clock or spawns a task. Hosts feed it bytes and time and act on what it
//! returns, the way `smoltcp` and `quinn-proto` are driven.
//!
//! ## Layers
//! - [`codec`]: every control packet of MQTT 3.1, 3.1.1 and 5.0. Decoding borrows from the
//!   input ([`codec::Packet<'a>`]); a frame that has not fully arrived is
//!   [`codec::DecodeError::Incomplete`], not a failure. Encoding writes into the caller's
//!   buffer and never half-writes it. Every wire rule of the specifications is checked on
//!   decode, and every failure maps to the reason code a broker must answer with.
//! - [`topic`]: validated topic names and filters, `+`/`#` matching, `$share` parsing.
//! - [`router`]: the subscription index that tells which sessions a message goes to.
//! - [`storage`]: the fixed-capacity (`heapless`) and growable (`alloc`) back-ends the
//!   router and the broker run on: one algorithm, two kinds of memory.
//! - [`broker`]: the broker state machine a host drives (`handle_*` in, `poll_*` out).
//! - [`uplink`]: the MQTT client side of a bridge: forwards a bridge's messages to an
//!   upstream broker and brings topics down from it, driven the same way.
//!
//! ## Features
//! - `alloc`: growable back-ends and `Vec` conveniences.
//! - `std`: implies `alloc`.
//! - `defmt`: `defmt::Format` on public types, for firmware logs.
//! - `serde`: `Serialize`/`Deserialize` on value types.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod blob;
pub mod broker;
pub mod codec;
pub(crate) mod index;
pub mod persist;
pub mod router;
pub mod session;
#[cfg(feature = "alloc")]
pub mod sim;
pub mod storage;
pub mod time;
pub mod topic;
pub mod uplink;

#[doc(hidden)]
pub mod __private {
    //! Re-exports for the macros of this crate.
    pub use heapless;
}
