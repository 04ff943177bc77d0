//! An `embassy-time` driver on the Cortex-M7's SysTick: a 1 kHz tick.
//!
//! SysTick counts the core clock down and interrupts at zero, once per millisecond; the interrupt advances a 64-bit tick count (`embassy-time`'s
//! `tick-hz-1_000`) and wakes the timers that are due, kept in `embassy-time-queue-utils`'
//! queue. A tick rather than one of the MCU's timers with an alarm (embassy-stm32's time
//! driver, 0.5 KB more flash, which the board's 96 KiB goal does not have) is exact enough
//! for MQTT keep-alives (seconds), and SysTick is the one timer every Cortex-M has.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use critical_section::{CriticalSection, Mutex};
use embassy_time_queue_utils::Queue;

struct Driver {
    /// Ticks since [`init`].
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

/// Starts the tick from the core clock, `core_hz` (at most 16.7 GHz: a tick's cycles fit
/// SysTick's 24 bits); call once at boot, after the clocks are set and before anything
/// waits on time.
pub fn init(mut syst: SYST, core_hz: u32) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(core_hz / embassy_time_driver::TICK_HZ as u32 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// One tick.
#[cortex_m_rt::exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get() + 1;
        ticks.set(now);
        if now >= DRIVER.alarm.borrow(cs).get() {
            DRIVER.expire(cs, now);
        }
    });
}
