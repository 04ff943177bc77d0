//! An `embassy-time` driver on the MPS2's CMSDK APB timer 0: a 1 kHz tick.
//!
//! The timer counts down from [`RELOAD`] at the 25 MHz system clock and interrupts at zero,
//! once per millisecond; the interrupt advances a 64-bit tick count (`embassy-time`'s
//! `tick-hz-1_000`) and wakes the timers that are due, kept in `embassy-time-queue-utils`'
//! queue. A tick rather than a one-shot alarm keeps the driver small and exact enough for
//! MQTT keep-alives (seconds); the CPU sleeps between ticks.
#![allow(unsafe_code)]

use core::cell::{Cell, RefCell};
use core::task::Waker;

use critical_section::{CriticalSection, Mutex};
use embassy_time_queue_utils::Queue;

use crate::irq::{self, Irq};

/// CMSDK APB timer 0 on the AN386.
const TIMER0: usize = 0x4000_0000;
const CTRL: usize = 0x00;
const VALUE: usize = 0x04;
const RELOAD_REG: usize = 0x08;
const INTCLEAR: usize = 0x0C;
const CTRL_ENABLE: u32 = 1 << 0;
const CTRL_IRQ_ENABLE: u32 = 1 << 3;
/// The AN386 system clock, which the APB timers count.
const SYSCLK_HZ: u32 = 25_000_000;
/// Counts per tick: one interrupt per millisecond.
const RELOAD: u32 = SYSCLK_HZ / 1_000 - 1;

fn write(offset: usize, value: u32) {
    // SAFETY: TIMER0 + offset is one of the timer's registers (CTRL, VALUE, RELOAD,
    // INTCLEAR), a device register valid for 32-bit volatile writes; no Rust object
    // lives there.
    unsafe { core::ptr::write_volatile((TIMER0 + offset) as *mut u32, value) }
}

struct Driver {
    /// Milliseconds since [`init`].
    ticks: Mutex<Cell<u64>>,
    /// Timers waiting, and the tick at which the earliest is due.
    queue: Mutex<RefCell<Queue>>,
    alarm: Mutex<Cell<u64>>,
}

impl Driver {
    /// Wakes the timers due at `now` and remembers when the next one is.
    fn expire(&self, cs: CriticalSection<'_>, now: u64) {
        let next = self.queue.borrow_ref_mut(cs).next_expiration(now);
        self.alarm.borrow(cs).set(next);
    }
}

impl embassy_time_driver::Driver for Driver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            if self.queue.borrow_ref_mut(cs).schedule_wake(at, waker) {
                self.expire(cs, self.ticks.borrow(cs).get());
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: Driver = Driver {
    ticks: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
    alarm: Mutex::new(Cell::new(u64::MAX)),
});

/// Starts the tick; call once at boot, before anything waits on time.
pub fn init() {
    write(CTRL, 0);
    write(RELOAD_REG, RELOAD);
    write(VALUE, RELOAD);
    write(INTCLEAR, 1);
    write(CTRL, CTRL_ENABLE | CTRL_IRQ_ENABLE);
    irq::enable(Irq::Timer0);
}

/// The timer 0 interrupt: one tick.
pub(crate) fn on_interrupt() {
    write(INTCLEAR, 1);
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get() + 1;
        ticks.set(now);
        if now >= DRIVER.alarm.borrow(cs).get() {
            DRIVER.expire(cs, now);
        }
    });
}
