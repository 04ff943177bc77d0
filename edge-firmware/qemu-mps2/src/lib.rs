//! The Arm MPS2 AN386 board (Cortex-M4) as QEMU emulates it, for the Fulmar firmware:
//! - [`lan9118`]: an `embassy-net-driver` for the board's SMSC LAN9118 Ethernet controller;
//! - [`time`]: an `embassy-time` driver on the board's CMSDK APB timers (a free-running clock and
//!   an alarm);
//! - [`irq`]: the board's interrupt numbers, dispatched from cortex-m-rt's default handler;
//! - [`flash`]: NOR flash kept in a host file through semihosting, for persistence.
//!
//! The binary (`src/bin/broker.rs`) wires them to `fulmar-firmware`'s broker tasks.
#![no_std]

pub mod flash;
pub mod irq;
pub mod lan9118;
pub mod time;
