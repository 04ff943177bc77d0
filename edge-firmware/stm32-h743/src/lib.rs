//! The NUCLEO-H743ZI board (STM32H743ZI, Cortex-M7) for the Fulmar firmware:
//! - [`eth`]: an `embassy-net-driver` for the MCU's Ethernet MAC over RMII, with frame
//!   buffers sized for the firmware's 576-byte IP MTU;
//! - [`rng`]: the seed from the MCU's random number generator;
//! - [`time`]: an `embassy-time` driver on SysTick.
//!
//! The binary (`src/bin/broker.rs`) wires them and embassy-stm32 (clocks, pins)
//! to `fulmar-firmware`'s broker tasks.
#![no_std]

pub mod eth;
pub mod rng;
pub mod time;
