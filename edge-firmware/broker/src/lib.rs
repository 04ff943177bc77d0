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
//! - [`log_panic`]: what a board's panic handler logs before it stops.
//!
//! [`Config`]: fulmar_core::broker::Config
#![no_std]

pub mod capacity;
mod inbox;
pub mod persist;
pub mod server;
#[cfg(feature = "uplink")]
pub mod uplink;

/// Logs a panic's location and literal message (defmt `error`). A board's
/// `#[panic_handler]` calls it, then stops the way that board can (QEMU exits, a board
/// under a probe faults). Only a literal message is logged: formatting a panic's arguments
/// would bring `core::fmt` (kilobytes of flash) into the firmware.
pub fn log_panic(info: &core::panic::PanicInfo<'_>) {
    let message = info.message().as_str().unwrap_or("(formatted)");
    match info.location() {
        Some(at) => defmt::error!(
            "panic at {=str}:{=u32}: {=str}",
            at.file(),
            at.line(),
            message
        ),
        None => defmt::error!("panic: {=str}", message),
    }
}
