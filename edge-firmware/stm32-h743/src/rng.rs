//! The seed of the broker's hash indexes and of the TCP sequence numbers, from the
//! STM32H743's true random number generator (RM0433, "RNG").
//!
//! The firmware needs 64 random bits once, at boot: read here from the generator's
//! registers in a bounded loop, rather than through embassy-stm32's interrupt-driven RNG
//! driver (0.5 KB more flash, which the board's 96 KiB goal does not have). Its clock is
//! HSI48, which the board's clock configuration turns on.

use embassy_stm32::Peri;
use embassy_stm32::pac;
use embassy_stm32::peripherals::RNG;

/// Reads of the status register before giving up on a word (a word takes about 50 cycles
/// of the generator's 48 MHz clock).
const SPIN_LIMIT: u32 = 100_000;

/// 64 random bits, or `None` if the generator reports a seed or clock error (or never
/// delivers).
pub fn seed(_rng: Peri<'static, RNG>) -> Option<u64> {
    embassy_stm32::rcc::enable_and_reset::<RNG>();
    let rng = pac::RNG;
    rng.cr().modify(|w| w.set_rngen(true));
    let word = || {
        for _ in 0..SPIN_LIMIT {
            let status = rng.sr().read();
            if status.secs() || status.cecs() {
                return None;
            }
            if status.drdy() {
                return Some(rng.dr().read());
            }
        }
        None
    };
    let low = word()?;
    let high = word()?;
    Some(u64::from(high) << 32 | u64::from(low))
}
