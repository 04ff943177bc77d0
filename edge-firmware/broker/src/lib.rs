//! `fulmar-firmware`: the Fulmar broker on microcontrollers, shared by every board crate.
//!
//! The whole `fulmar-core` broker (MQTT 3.1, 3.1.1 and 5.0, QoS 0/1/2, retained messages,
//! wills, persistent sessions) in fixed-capacity storage with no heap. A board brings the
//! network ([`embassy_net::Stack`]) and a clock (an `embassy-time` driver); this crate
//! brings the broker:
//! - [`capacity`]: every capacity, chosen at build time, and the [`Config`] that matches
//!   them.
//! - [`server`]: the broker in a `static` and [`server::serve_slot`], the loop a board runs
//!   in one task per TCP socket of its pool; `inbox` holds what each socket received and
//!   the core has not consumed yet.
//! - [`persist`]: retained messages and persistent sessions in NOR flash
//!   (`sequential-storage`), restored at boot.
//! - `uplink` (feature `uplink`): the bridge to an upstream broker, with store and forward.
//!
//! [`Config`]: fulmar_core::broker::Config
#![no_std]

pub mod capacity;
mod inbox;
pub mod persist;
pub mod server;
#[cfg(feature = "uplink")]
pub mod uplink;
