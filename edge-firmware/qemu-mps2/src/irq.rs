//! Interrupt lines of the MPS2 AN386 used by the firmware, and their dispatch.
//!
//! No peripheral-access crate exists for this board, so the vector table is cortex-m-rt's
//! default one (every interrupt runs `DefaultHandler`) and [`dispatch`] routes by number.
#![allow(unsafe_code)]

use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::NVIC;

/// An interrupt line of the board (the numbers QEMU's `mps2` machine wires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Irq {
    /// CMSDK APB timer 0 (the clock's wraps).
    Timer0 = 8,
    /// CMSDK APB timer 1 (the alarm).
    Timer1 = 9,
    /// LAN9118 Ethernet.
    Ethernet = 13,
}

// SAFETY: `number` returns the board's interrupt line of each variant, all below the 32
// lines the AN386's NVIC has.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// Lets `irq` reach the CPU.
pub fn enable(irq: Irq) {
    // SAFETY: the handler of every line the firmware enables (`dispatch`) only touches
    // state behind critical sections or atomics, so unmasking cannot break a critical
    // section that relies on masking.
    unsafe { NVIC::unmask(irq) };
}

/// Runs the handler of interrupt `irqn` (cortex-m-rt's `DefaultHandler` argument).
pub fn dispatch(irqn: i16) {
    if irqn == Irq::Timer0 as i16 {
        crate::time::on_wrap();
    } else if irqn == Irq::Timer1 as i16 {
        crate::time::on_alarm();
    } else if irqn == Irq::Ethernet as i16 {
        crate::lan9118::on_interrupt();
    }
}
