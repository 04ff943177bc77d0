//! `fulmar-firmware`: the Fulmar broker on microcontrollers (embassy + embassy-net).
//!
//! Empty until the firmware issue lands: this crate will hold the broker task that drives
//! `fulmar-core` over embassy-net TCP sockets, with one board crate per target beside it.
#![no_std]
