//! An `embassy-net-driver` for the SMSC LAN9118 Ethernet controller (as on the MPS2 AN386,
//! at [`BASE`], interrupt line 13), interrupt-driven.
//!
//! The controller keeps whole frames in FIFOs: the driver reads a received frame's status
//! word (its length, which includes the 4-byte FCS, and an error flag) and then its data
//! words, and writes a frame to send as two command words followed by its data words. An
//! RX-status-level interrupt wakes embassy-net when a frame arrives; a TX-data-available
//! interrupt when FIFO room comes back (QEMU sends each frame as soon as it is written, so
//! there it is never needed). One frame buffer in each direction: embassy-net consumes a
//! token before it asks for the next.
#![allow(unsafe_code)]

use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

use crate::irq::{self, Irq};

/// The controller's registers on the AN386.
pub const BASE: usize = 0x4020_0000;

// Register offsets (LAN9118 datasheet, "System Control and Status Registers").
const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5C;
const BYTE_TEST: usize = 0x64;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7C;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const FREE_RUN: usize = 0x9C;
const MAC_CSR_CMD: usize = 0xA4;
const MAC_CSR_DATA: usize = 0xA8;

/// What BYTE_TEST reads when the bus and the chip agree on byte order.
const BYTE_TEST_VALUE: u32 = 0x8765_4321;
const HW_CFG_SRST: u32 = 1 << 0;
const PMT_CTRL_READY: u32 = 1 << 0;
/// IRQ pin enabled, active high, push-pull.
const IRQ_CFG_ENABLE: u32 = (1 << 8) | (1 << 4) | (1 << 0);
/// RX status FIFO above its level (0): a frame is waiting.
const INT_RSFL: u32 = 1 << 3;
/// TX data FIFO room above its level.
const INT_TDFA: u32 = 1 << 9;
/// Transmitter on; TX status FIFO may overrun (the driver never reads it).
const TX_CFG_ON: u32 = (1 << 1) | (1 << 2);
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_FDPX: u32 = 1 << 20;
/// RX status: error summary.
const RX_STATUS_ERROR: u32 = 1 << 15;
/// TX command A: first and last segment of a frame.
const TX_CMD_A_FIRST_LAST: u32 = (1 << 13) | (1 << 12);

/// Largest Ethernet frame without FCS (`capacity::ETHERNET_MTU`: both frame buffers are
/// 1.8 KB smaller than at Ethernet's 1 500 bytes of IP).
const MTU: usize = fulmar_firmware::capacity::ETHERNET_MTU;
/// FCS the controller appends to each received frame.
const FCS: usize = 4;
/// Bounded waits for the chip (reset, MAC access): a dead chip must not hang the boot.
const SPIN_LIMIT: u32 = 100_000;

static RX_WAKER: AtomicWaker = AtomicWaker::new();
static TX_WAKER: AtomicWaker = AtomicWaker::new();

fn read(offset: usize) -> u32 {
    // SAFETY: BASE + offset is one of the LAN9118's 32-bit registers (the offsets above,
    // all inside its 256-byte window), valid for volatile reads; no Rust object lives
    // there. Reading a FIFO port pops it, which is what the callers intend.
    unsafe { core::ptr::read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as for `read`: a device register of the LAN9118, valid for volatile writes.
    unsafe { core::ptr::write_volatile((BASE + offset) as *mut u32, value) }
}

fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    (0..SPIN_LIMIT).any(|_| done())
}

fn mac_read(reg: u32) -> u32 {
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0);
    write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | reg);
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0);
    read(MAC_CSR_DATA)
}

fn mac_write(reg: u32, value: u32) {
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0);
    write(MAC_CSR_DATA, value);
    write(MAC_CSR_CMD, MAC_CSR_BUSY | reg);
    spin_until(|| read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0);
}

/// Why the controller could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum InitError {
    /// BYTE_TEST did not read back its fixed pattern: no LAN9118 at [`BASE`].
    NotFound(u32),
    /// The chip did not come out of reset.
    NotReady,
}

/// The LAN9118, reset and running.
#[derive(Debug)]
pub struct Lan9118 {
    mac: [u8; 6],
    rx: [u8; MTU + FCS],
    tx: [u8; MTU],
}

impl Lan9118 {
    /// Resets the controller, turns its receiver and transmitter on with the MAC address
    /// it holds (QEMU's `-nic ...,mac=`), and enables its interrupt.
    pub fn new() -> Result<Self, InitError> {
        let test = read(BYTE_TEST);
        if test != BYTE_TEST_VALUE {
            return Err(InitError::NotFound(test));
        }
        write(HW_CFG, HW_CFG_SRST);
        if !spin_until(|| read(HW_CFG) & HW_CFG_SRST == 0 && read(PMT_CTRL) & PMT_CTRL_READY != 0) {
            return Err(InitError::NotReady);
        }
        let low = mac_read(MAC_ADDRL).to_le_bytes();
        let high = mac_read(MAC_ADDRH).to_le_bytes();
        let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        // Exact address match plus broadcast (not promiscuous), full duplex.
        mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX);
        write(TX_CFG, TX_CFG_ON);
        write(INT_STS, u32::MAX);
        write(INT_EN, INT_RSFL | INT_TDFA);
        write(IRQ_CFG, IRQ_CFG_ENABLE);
        irq::enable(Irq::Ethernet);
        Ok(Self {
            mac,
            rx: [0; MTU + FCS],
            tx: [0; MTU],
        })
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The controller's free-running 25 MHz counter: varies from boot to boot with host
    /// timing under QEMU, so it serves as a seed.
    pub fn free_running_counter(&self) -> u32 {
        read(FREE_RUN)
    }

    /// Pops the next received frame into `self.rx` and returns its length without FCS;
    /// frames with errors are dropped.
    fn pop_frame(&mut self) -> Option<usize> {
        loop {
            let waiting = (read(RX_FIFO_INF) >> 16) & 0xFF;
            if waiting == 0 {
                return None;
            }
            let status = read(RX_STATUS_FIFO);
            let len = ((status >> 16) & 0x3FFF) as usize;
            let words = len.div_ceil(4);
            let usable = status & RX_STATUS_ERROR == 0 && (FCS + 14..=self.rx.len()).contains(&len);
            if !usable {
                // The frame's words must leave the data FIFO all the same.
                for _ in 0..words {
                    read(RX_DATA_FIFO);
                }
                continue;
            }
            for chunk in self.rx[..len].chunks_mut(4) {
                let word = read(RX_DATA_FIFO).to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            return Some(len - FCS);
        }
    }
}

/// The controller's interrupt: acknowledge and wake embassy-net.
pub(crate) fn on_interrupt() {
    let status = read(INT_STS);
    write(INT_STS, status);
    if status & INT_RSFL != 0 {
        RX_WAKER.wake();
    }
    if status & INT_TDFA != 0 {
        TX_WAKER.wake();
    }
}

/// Room the TX data FIFO has, in bytes.
fn tx_room() -> usize {
    (read(TX_FIFO_INF) & 0xFFFF) as usize
}

/// A received frame.
#[derive(Debug)]
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        f(self.frame)
    }
}

/// Room to send one frame.
#[derive(Debug)]
pub struct TxToken<'a> {
    buf: &'a mut [u8; MTU],
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let len = len.min(MTU);
        let frame = &mut self.buf[..len];
        let result = f(frame);
        // One segment: command A (first + last, size), command B (tag, frame length).
        write(TX_DATA_FIFO, TX_CMD_A_FIRST_LAST | len as u32);
        write(TX_DATA_FIFO, ((len as u32) << 16) | len as u32);
        for chunk in frame.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        result
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Register first: a frame arriving after the FIFO check still wakes us.
        RX_WAKER.register(cx.waker());
        let len = self.pop_frame()?;
        Some((
            RxToken {
                frame: &mut self.rx[..len],
            },
            TxToken { buf: &mut self.tx },
        ))
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<Self::TxToken<'_>> {
        TX_WAKER.register(cx.waker());
        // A frame plus its two command words and padding.
        (tx_room() >= MTU + 12).then_some(TxToken { buf: &mut self.tx })
    }

    fn link_state(&mut self, _cx: &mut Context<'_>) -> LinkState {
        // QEMU's PHY is always up; a real board would read the PHY's status register.
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
