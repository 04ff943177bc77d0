//! An `embassy-time` driver on the MPS2's two CMSDK APB timers: timer 0 runs free as the
//! clock, timer 1 is the alarm.
//!
//! The clock is read, not counted: timer 0 counts down through all 32 bits at the 25 MHz
//! system clock (a wrap every 171.8 s) and its wrap interrupt extends it to 64 bits, so
//! [`now`](embassy_time_driver::Driver::now) is whatever the counter says. Under QEMU the
//! counter is computed from the virtual clock, which follows the host's clock (no
//! `-icount`), so firmware time keeps real time even when a busy host lets QEMU run late
//! and deliver fewer interrupts; a clock that counted 1 ms interrupts fell behind then (6 to 8
//! times slower on a loaded CI machine, stretching keep-alives and backoffs alike).
//!
//! The first wrap comes [`FIRST_WRAP`] counts (2 s) after boot rather than 171.8 s, so
//! every run, and every end-to-end test longer than that, goes through the wrap path.
//!
//! Timer 1 is armed for the earliest timer in `embassy-time-queue-utils`' queue and stopped
//! when it fires, so the CPU sleeps until something is due; an alarm further than one
//! counter period away fires early and is armed again.
#![allow(unsafe_code)]

use core::cell::{Cell, RefCell};
use core::task::Waker;

use critical_section::{CriticalSection, Mutex};
use embassy_time_queue_utils::Queue;

use crate::irq::{self, Irq};

/// CMSDK APB timer 0 (the clock) and timer 1 (the alarm) on the AN386.
const TIMER0: usize = 0x4000_0000;
const TIMER1: usize = 0x4000_1000;
const CTRL: usize = 0x00;
const VALUE: usize = 0x04;
const RELOAD: usize = 0x08;
/// Reads the interrupt status, writing clears it.
const INTSTATUS: usize = 0x0C;
const CTRL_ENABLE: u32 = 1 << 0;
const CTRL_IRQ_ENABLE: u32 = 1 << 3;
/// Timer counts (the AN386 system clock, which the APB timers count) per `embassy-time`
/// tick (`tick-hz-1_000`).
const COUNTS_PER_TICK: u64 = 25_000_000 / embassy_time_driver::TICK_HZ;
/// Timer 0's first count down, from boot to its first wrap: 2 s (later ones are 2^32).
const FIRST_WRAP: u32 = 50_000_000;
/// The counts timer 0's first period skips, taken off every reading so time starts at 0.
const SKIPPED: u64 = (u32::MAX - FIRST_WRAP) as u64;

fn read(timer: usize, offset: usize) -> u32 {
    // SAFETY: timer + offset is a register of one of the two CMSDK timers (CTRL, VALUE,
    // RELOAD, INTSTATUS), a device register valid for 32-bit volatile reads with no side
    // effect; no Rust object lives there.
    unsafe { core::ptr::read_volatile((timer + offset) as *const u32) }
}

fn write(timer: usize, offset: usize, value: u32) {
    // SAFETY: as in `read`; the registers are valid for 32-bit volatile writes.
    unsafe { core::ptr::write_volatile((timer + offset) as *mut u32, value) }
}

struct Driver {
    /// How many times timer 0 wrapped (counted by its interrupt): the clock's high half.
    wraps: Mutex<Cell<u32>>,
    /// Timers waiting.
    queue: Mutex<RefCell<Queue>>,
}

impl Driver {
    /// Timer counts since [`init`]. Inside a critical section the wrap interrupt cannot run,
    /// so a wrap not yet counted shows as timer 0's pending status: it belongs to the count
    /// if the value read has already reloaded (high bit set; just after the wrap), not if it
    /// is still near zero (read just before). QEMU sets the status and reloads the value in
    /// one step, and the next wrap is minutes away, so the two readings cannot disagree.
    fn counts(&self, cs: CriticalSection<'_>) -> u64 {
        let mut wraps = self.wraps.borrow(cs).get();
        let value = read(TIMER0, VALUE);
        if read(TIMER0, INTSTATUS) & 1 != 0 && value & (1 << 31) != 0 {
            wraps += 1;
        }
        ((u64::from(wraps) << 32) | u64::from(u32::MAX - value)) - SKIPPED
    }

    /// Wakes the timers due now and arms timer 1 for the next one.
    fn expire(&self, cs: CriticalSection<'_>) {
        loop {
            let now = self.counts(cs) / COUNTS_PER_TICK;
            let next = self.queue.borrow_ref_mut(cs).next_expiration(now);
            if self.arm(cs, next) {
                return;
            }
        }
    }

    /// Arms timer 1 to fire at tick `at` (`u64::MAX`: never); `false` if `at` has passed
    /// already.
    fn arm(&self, cs: CriticalSection<'_>, at: u64) -> bool {
        write(TIMER1, CTRL, 0);
        write(TIMER1, INTSTATUS, 1);
        if at == u64::MAX {
            return true;
        }
        let (at, now) = (at.saturating_mul(COUNTS_PER_TICK), self.counts(cs));
        if at <= now {
            return false;
        }
        let delay = u32::try_from(at - now).unwrap_or(u32::MAX);
        write(TIMER1, RELOAD, delay);
        write(TIMER1, VALUE, delay);
        write(TIMER1, CTRL, CTRL_ENABLE | CTRL_IRQ_ENABLE);
        true
    }
}

impl embassy_time_driver::Driver for Driver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.counts(cs) / COUNTS_PER_TICK)
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            if self.queue.borrow_ref_mut(cs).schedule_wake(at, waker) {
                self.expire(cs);
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: Driver = Driver {
    wraps: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Starts the clock; call once at boot, before anything waits on time.
pub fn init() {
    write(TIMER1, CTRL, 0);
    write(TIMER1, INTSTATUS, 1);
    write(TIMER0, CTRL, 0);
    write(TIMER0, RELOAD, u32::MAX);
    write(TIMER0, VALUE, FIRST_WRAP);
    write(TIMER0, INTSTATUS, 1);
    write(TIMER0, CTRL, CTRL_ENABLE | CTRL_IRQ_ENABLE);
    irq::enable(Irq::Timer0);
    irq::enable(Irq::Timer1);
}

/// The timer 0 interrupt: the counter wrapped.
pub(crate) fn on_wrap() {
    critical_section::with(|cs| {
        // Cleared and counted in one critical section, so `counts` never sees both.
        write(TIMER0, INTSTATUS, 1);
        let wraps = DRIVER.wraps.borrow(cs);
        wraps.set(wraps.get().wrapping_add(1));
    });
}

/// The timer 1 interrupt: the alarm (or a step towards a far one).
pub(crate) fn on_alarm() {
    critical_section::with(|cs| DRIVER.expire(cs));
}
