//! An `embassy-net-driver` for the STM32H743's Ethernet MAC over RMII, with frame buffers
//! sized for the firmware's 576-byte IP MTU (`fulmar_firmware::capacity::ETHERNET_MTU`), as
//! the QEMU board's LAN9118 driver has.
//!
//! embassy-stm32 0.6's own driver (`embassy_stm32::eth::Ethernet`) holds every frame buffer
//! at Ethernet's full 1 514 bytes (1 536 to receive) and takes at least one buffer to send
//! and two to receive: 4.6 KB of RAM. The broker's clients send TCP segments of at most
//! the 536-byte MSS a 576-byte MTU gives (their sockets' rings are a few hundred bytes
//! anyway), so this driver keeps the same three buffers at about 600 bytes each: 1.9 KB. The
//! clocks and the pins' alternate functions come from embassy-stm32; the PHY (any IEEE
//! 802.3 PHY: the NUCLEO's LAN8742A) is reset, auto-negotiates and reports its link through
//! the MAC's MDIO interface here, in a few registers' worth of code rather than
//! embassy-stm32's `GenericPhy` and `Sma` (0.6 KB more flash, which the board's 96 KiB
//! goal does not have).
//!
//! The MAC's DMA works on two rings of descriptors (RM0433, "Ethernet DMA descriptors"):
//! the driver gives a descriptor to the DMA by setting its OWN bit, and the DMA clears it
//! when it has filled (receive) or sent (transmit) the buffer. Descriptor words are atomics
//! (ordinary loads and stores the compiler keeps, with fences ordering them against the
//! buffers), so only the interrupt handler and its enabling need `unsafe`. A received frame
//! larger than a buffer spans two descriptors and is dropped (never TCP, which keeps to the
//! MSS); the data cache stays off (cortex-m-rt does not enable it), so the DMA and the CPU
//! see the same memory.
#![allow(unsafe_code)]

use core::future::Future;
use core::sync::atomic::{AtomicU32, Ordering, fence};
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_stm32::Peri;
use embassy_stm32::eth::{
    CRSPin, MDCPin, MDIOPin, RXD0Pin, RXD1Pin, RefClkPin, TXD0Pin, TXD1Pin, TXEnPin,
};
use embassy_stm32::gpio::{AfType, AnyPin, Flex, OutputType, Pin, Speed};
use embassy_stm32::interrupt::typelevel::{self, Binding, Interrupt};
use embassy_stm32::pac;
use embassy_stm32::pac::syscfg::vals::EthSelPhy;
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_sync::waitqueue::AtomicWaker;

/// Largest Ethernet frame without FCS: 590 bytes (`capacity::ETHERNET_MTU`).
const MTU: usize = fulmar_firmware::capacity::ETHERNET_MTU;
/// A receive buffer: a frame of [`MTU`] bytes and its 4-byte FCS (the MAC keeps it on
/// Ethernet II frames), rounded up to 16 bytes as the DMA's buffer size must be.
const RX_BUFFER: usize = 608;
/// A transmit buffer: a frame of [`MTU`] bytes, rounded up to 8 (the buffers' alignment).
const TX_BUFFER: usize = 592;
/// Receive descriptors: two, so one fills while embassy-net reads the other (the MAC's
/// 2 KiB receive FIFO holds a few more frames while both are full). One transmit
/// descriptor: embassy-net sends a frame at a time, and 590 bytes take 47 µs at 100 Mbit/s.
const RX_COUNT: usize = 2;

// Descriptor word 3 (RM0433, "Receive/Transmit normal descriptor").
/// Owned by the DMA.
const OWN: u32 = 1 << 31;
/// A context descriptor (receive write-back): not a frame.
const CTXT: u32 = 1 << 30;
/// First and last descriptor of a frame.
const FD: u32 = 1 << 29;
const LD: u32 = 1 << 28;
/// Error summary (receive write-back).
const ES: u32 = 1 << 15;
/// Receive read format: interrupt on completion, buffer 1 address valid.
const RX_IOC: u32 = 1 << 30;
const RX_BUF1V: u32 = 1 << 24;
/// Receive write-back: the frame's length.
const RX_LENGTH: u32 = 0x7FFF;
/// Transmit word 2: interrupt on completion (the length is in the low 14 bits).
const TX_IOC: u32 = 1 << 31;
/// The RMII pins: push-pull outputs at the highest speed (inputs still read through).
const PIN_SPEED: AfType = AfType::output(OutputType::PushPull, Speed::VeryHigh);

static WAKER: AtomicWaker = AtomicWaker::new();

/// One DMA descriptor: four words shared with the DMA.
#[repr(C)]
struct Descriptor([AtomicU32; 4]);

impl Descriptor {
    const fn new() -> Self {
        Self([const { AtomicU32::new(0) }; 4])
    }

    fn owned_by_dma(&self) -> bool {
        self.0[3].load(Ordering::Relaxed) & OWN != 0
    }

    /// Fills words 0 to 2, then (after a fence, so the DMA never sees OWN before the rest
    /// or the buffer) word 3.
    fn give(&self, buffer: u32, word2: u32, word3: u32) {
        self.0[0].store(buffer, Ordering::Relaxed);
        self.0[1].store(0, Ordering::Relaxed);
        self.0[2].store(word2, Ordering::Relaxed);
        fence(Ordering::Release);
        self.0[3].store(word3, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

/// The descriptors and frame buffers the DMA reads and writes: all zero bytes, in `.bss`.
/// Keep it in AXI SRAM (the `RAM` region of `memory.x`): the Ethernet DMA cannot reach the
/// DTCM.
#[repr(C, align(8))]
#[derive(Debug)]
pub struct Buffers {
    rx_descriptors: [Descriptor; RX_COUNT],
    tx_descriptor: Descriptor,
    rx: [[u8; RX_BUFFER]; RX_COUNT],
    tx: [u8; TX_BUFFER],
}

impl core::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Descriptor")
    }
}

impl Buffers {
    /// Empty buffers; put them in a `static` (`static_cell::ConstStaticCell`).
    pub const fn new() -> Self {
        Self {
            rx_descriptors: [const { Descriptor::new() }; RX_COUNT],
            tx_descriptor: Descriptor::new(),
            rx: [[0; RX_BUFFER]; RX_COUNT],
            tx: [0; TX_BUFFER],
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Wakes embassy-net when a frame arrived or one was sent.
#[derive(Debug)]
pub struct InterruptHandler;

impl typelevel::Handler<typelevel::ETH> for InterruptHandler {
    unsafe fn on_interrupt() {
        WAKER.wake();
        let dma = pac::ETH.ethernet_dma();
        // Write 1 to clear: transmit done, receive done, their summary.
        dma.dmacsr().write(|w| {
            w.set_ti(true);
            w.set_ri(true);
            w.set_nis(true);
        });
        // The clear takes two peripheral clock cycles to reach the NVIC: read back so the
        // interrupt is not taken again at once.
        dma.dmacsr().read();
        dma.dmacsr().read();
    }
}

/// The receive ring.
#[derive(Debug)]
struct Rx {
    descriptors: &'static [Descriptor; RX_COUNT],
    buffers: &'static mut [[u8; RX_BUFFER]; RX_COUNT],
    next: usize,
}

/// The transmit ring: one descriptor.
#[derive(Debug)]
struct Tx {
    descriptor: &'static Descriptor,
    buffer: &'static mut [u8; TX_BUFFER],
}

/// The MAC, its DMA rings and the PHY.
pub struct Ethernet {
    rx: Rx,
    tx: Tx,
    /// The PHY's MDIO address.
    phy: u8,
    mac: [u8; 6],
    mdio: Mdio,
}

impl core::fmt::Debug for Ethernet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Ethernet")
    }
}

/// The pins between the MAC and the PHY: RMII data and MDIO management.
#[derive(Debug)]
pub struct RmiiPins<A: Pin, B: Pin, C: Pin, D: Pin, E: Pin, F: Pin, G: Pin, H: Pin, I: Pin> {
    pub ref_clk: Peri<'static, A>,
    pub crs_dv: Peri<'static, B>,
    pub rx_d0: Peri<'static, C>,
    pub rx_d1: Peri<'static, D>,
    pub tx_d0: Peri<'static, E>,
    pub tx_d1: Peri<'static, F>,
    pub tx_en: Peri<'static, G>,
    pub mdio: Peri<'static, H>,
    pub mdc: Peri<'static, I>,
}

/// Gives `pin` to the MAC (its alternate function `af`) for good: the pin is consumed, and
/// its `Flex` is forgotten so that nothing ever sets it back to an analog input.
fn af_pin(pin: Peri<'static, AnyPin>, af: u8) {
    let mut flex = Flex::new(pin);
    flex.set_as_af_unchecked(af, PIN_SPEED);
    core::mem::forget(flex);
}

impl Ethernet {
    /// Starts the MAC on `buffers` with MAC address `mac`, its RMII `pins`, and the PHY on
    /// the MDIO bus (found by probing its 32 addresses, then reset and auto-negotiating).
    /// `hclk` is the AHB clock, which the MDIO clock divides.
    pub fn new<A, B, C, D, E, F, G, H, I>(
        buffers: &'static mut Buffers,
        _eth: Peri<'static, ETH>,
        _irq: impl Binding<typelevel::ETH, InterruptHandler>,
        pins: RmiiPins<A, B, C, D, E, F, G, H, I>,
        _sma: Peri<'static, ETH_SMA>,
        hclk: u32,
        mac: [u8; 6],
    ) -> Self
    where
        A: RefClkPin<ETH>,
        B: CRSPin<ETH>,
        C: RXD0Pin<ETH>,
        D: RXD1Pin<ETH>,
        E: TXD0Pin<ETH>,
        F: TXD1Pin<ETH>,
        G: TXEnPin<ETH>,
        H: MDIOPin<ETH_SMA>,
        I: MDCPin<ETH_SMA>,
    {
        // Each pin to its alternate function for the MAC (the number its type knows).
        macro_rules! to_mac {
            ($($pin:ident),*) => {$(
                let af = pins.$pin.af_num();
                af_pin(pins.$pin.into(), af);
            )*};
        }
        to_mac!(
            ref_clk, crs_dv, rx_d0, rx_d1, tx_d0, tx_d1, tx_en, mdio, mdc
        );
        critical_section::with(|_| {
            pac::RCC.ahb1enr().modify(|w| {
                w.set_ethen(true);
                w.set_ethtxen(true);
                w.set_ethrxen(true);
            });
            pac::SYSCFG
                .pmcr()
                .modify(|w| w.set_eth_sel_phy(EthSelPhy::RMII));
        });
        let regs = pac::ETH;
        let (dma, mac_regs, mtl) = (
            regs.ethernet_dma(),
            regs.ethernet_mac(),
            regs.ethernet_mtl(),
        );
        dma.dmamr().modify(|w| w.set_swr(true));
        while dma.dmamr().read().swr() {}

        // 100 Mbit/s full duplex (what the PHY advertises first), padding and FCS removed
        // from 802.3 length frames.
        mac_regs.maccr().modify(|w| {
            w.set_ipg(0);
            w.set_acs(true);
            w.set_fes(true);
            w.set_dm(true);
        });
        // Every multicast frame passes (the broker needs none, but ARP and IPv4 do not
        // suffer from it); unicast is filtered on the address below.
        mac_regs.macpfr().modify(|w| w.set_pm(true));
        // The high half first: writing the low half latches both.
        mac_regs
            .maca0hr()
            .modify(|w| w.set_addrhi(u16::from_le_bytes([mac[4], mac[5]])));
        mac_regs
            .maca0lr()
            .write(|w| w.set_addrlo(u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]])));
        // The management counters' interrupts stay off.
        mac_regs.mmc_rx_interrupt_mask().write(|w| {
            w.set_rxcrcerpim(true);
            w.set_rxalgnerpim(true);
            w.set_rxucgpim(true);
            w.set_rxlpiuscim(true);
            w.set_rxlpitrcim(true);
        });
        mac_regs.mmc_tx_interrupt_mask().write(|w| {
            w.set_txscolgpim(true);
            w.set_txmcolgpim(true);
            w.set_txgpktim(true);
            w.set_txlpiuscim(true);
            w.set_txlpitrcim(true);
        });
        // Whole frames through the FIFOs (store and forward) both ways.
        mtl.mtlrx_qomr().modify(|w| w.set_rsf(true));
        mtl.mtltx_qomr().modify(|w| w.set_tsf(true));
        dma.dmactx_cr().modify(|w| w.set_txpbl(1));
        dma.dmacrx_cr().modify(|w| {
            w.set_rxpbl(1);
            w.set_rbsz(RX_BUFFER as u16);
        });

        let Buffers {
            rx_descriptors,
            tx_descriptor,
            rx,
            tx,
        } = buffers;
        for (descriptor, buffer) in rx_descriptors.iter().zip(rx.iter()) {
            descriptor.give(address(buffer), 0, OWN | RX_IOC | RX_BUF1V);
        }
        tx_descriptor.0[3].store(0, Ordering::Relaxed);
        dma.dmacrx_dlar()
            .write(|w| w.0 = address(&rx_descriptors[0]));
        dma.dmacrx_rlr().write(|w| w.set_rdrl(RX_COUNT as u16 - 1));
        dma.dmactx_dlar().write(|w| w.0 = address(tx_descriptor));
        dma.dmactx_rlr().write(|w| w.set_tdrl(0));
        fence(Ordering::SeqCst);

        mac_regs.maccr().modify(|w| {
            w.set_re(true);
            w.set_te(true);
        });
        mtl.mtltx_qomr().modify(|w| w.set_ftq(true));
        dma.dmactx_cr().modify(|w| w.set_st(true));
        dma.dmacrx_cr().modify(|w| w.set_sr(true));
        rx_tail();
        dma.dmacier().modify(|w| {
            w.set_nie(true);
            w.set_rie(true);
            w.set_tie(true);
        });

        let mdio = Mdio::new(hclk);
        let phy = mdio.reset_phy();

        typelevel::ETH::unpend();
        // SAFETY: the handler bound to ETH (`InterruptHandler`, required by `_irq`) only
        // wakes a waker and clears the DMA's status flags; nothing it touches relies on
        // the interrupt being masked.
        unsafe { typelevel::ETH::enable() };

        Self {
            rx: Rx {
                descriptors: rx_descriptors,
                buffers: rx,
                next: 0,
            },
            tx: Tx {
                descriptor: tx_descriptor,
                buffer: tx,
            },
            phy,
            mdio,
            mac,
        }
    }
}

// IEEE 802.3 clause 22 PHY registers.
const PHY_CONTROL: u8 = 0;
const PHY_STATUS: u8 = 1;
const PHY_ID1: u8 = 2;
const CONTROL_RESET: u16 = 1 << 15;
/// Speed 100 Mbit/s, auto-negotiation on and restarted.
const CONTROL_AUTONEG: u16 = (1 << 13) | (1 << 12) | (1 << 9);
const STATUS_LINK_UP: u16 = 1 << 2;
const STATUS_AUTONEG_DONE: u16 = 1 << 5;
/// MDIO operations (MACMDIOAR GOC).
const MDIO_WRITE: u8 = 0b01;
const MDIO_READ: u8 = 0b11;
/// Bounded waits for the MDIO bus and the PHY's reset: a missing PHY must not hang the boot.
const SPIN_LIMIT: u32 = 1_000_000;

/// The MAC's MDIO interface to the PHY (MACMDIOAR, MACMDIODR).
#[derive(Debug)]
struct Mdio {
    /// MDC = HCLK divided so that it stays under 2.5 MHz (MACMDIOAR CR).
    clock_range: u8,
}

impl Mdio {
    fn new(hclk: u32) -> Self {
        let clock_range = match hclk / 1_000_000 {
            0..=34 => 2,
            35..=59 => 3,
            60..=99 => 0,
            100..=149 => 1,
            150..=249 => 4,
            _ => 5,
        };
        Self { clock_range }
    }

    /// Runs one MDIO operation and waits (bounded) for its end.
    fn operate(&self, phy: u8, register: u8, operation: u8) {
        let mac = pac::ETH.ethernet_mac();
        mac.macmdioar().modify(|w| {
            w.set_pa(phy);
            w.set_rda(register);
            w.set_goc(operation);
            w.set_cr(self.clock_range);
            w.set_mb(true);
        });
        for _ in 0..SPIN_LIMIT {
            if !mac.macmdioar().read().mb() {
                break;
            }
        }
    }

    fn read(&self, phy: u8, register: u8) -> u16 {
        self.operate(phy, register, MDIO_READ);
        pac::ETH.ethernet_mac().macmdiodr().read().md()
    }

    fn write(&self, phy: u8, register: u8, value: u16) {
        pac::ETH
            .ethernet_mac()
            .macmdiodr()
            .write(|w| w.set_md(value));
        self.operate(phy, register, MDIO_WRITE);
    }

    /// Finds the PHY (the first address whose identifier reads as something other than
    /// the bus's idle all-ones; 0 if none does), resets it and starts auto-negotiation.
    /// Returns its address.
    fn reset_phy(&self) -> u8 {
        let phy = (0..32)
            .find(|&address| self.read(address, PHY_ID1) != 0xFFFF)
            .unwrap_or(0);
        self.write(phy, PHY_CONTROL, CONTROL_RESET);
        for _ in 0..SPIN_LIMIT {
            if self.read(phy, PHY_CONTROL) & CONTROL_RESET == 0 {
                break;
            }
        }
        self.write(phy, PHY_CONTROL, CONTROL_AUTONEG);
        phy
    }
}

/// The address the DMA uses for `value` (its 32-bit bus address).
fn address<T>(value: &T) -> u32 {
    core::ptr::from_ref(value) as u32
}

/// A tail pointer outside both rings: the DMA goes round its ring for as long as the
/// descriptors are its own and never stops at the tail (embassy-stm32's driver does the
/// same, embassy issue 2129); writing it wakes a suspended DMA.
const TAIL: u32 = 0xFFFF_FFF0;

/// Tells the receive DMA that a descriptor is its own again.
fn rx_tail() {
    pac::ETH.ethernet_dma().dmacrx_dtpr().write(|w| w.0 = TAIL);
}

/// Tells the transmit DMA that a descriptor is ready (see [`rx_tail`]).
fn tx_tail() {
    pac::ETH.ethernet_dma().dmactx_dtpr().write(|w| w.0 = TAIL);
}

impl Rx {
    /// The length of the next whole received frame, dropping erroneous and partial ones.
    fn next_frame(&mut self) -> Option<usize> {
        for _ in 0..RX_COUNT {
            let descriptor = &self.descriptors[self.next];
            if descriptor.owned_by_dma() {
                return None;
            }
            fence(Ordering::Acquire);
            let status = descriptor.0[3].load(Ordering::Relaxed);
            if status & (FD | LD | ES | CTXT) == FD | LD {
                return Some((status & RX_LENGTH) as usize);
            }
            self.pop();
        }
        None
    }

    /// Gives the current descriptor back to the DMA and moves on.
    fn pop(&mut self) {
        let buffer = address(&self.buffers[self.next]);
        self.descriptors[self.next].give(buffer, 0, OWN | RX_IOC | RX_BUF1V);
        rx_tail();
        self.next = (self.next + 1) % RX_COUNT;
    }
}

impl Tx {
    fn available(&self) -> bool {
        !self.descriptor.owned_by_dma()
    }
}

/// A received frame.
#[derive(Debug)]
pub struct RxToken<'a> {
    rx: &'a mut Rx,
    len: usize,
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let next = self.rx.next;
        let len = self.len.min(RX_BUFFER);
        let result = f(&mut self.rx.buffers[next][..len]);
        self.rx.pop();
        result
    }
}

/// Room to send one frame.
#[derive(Debug)]
pub struct TxToken<'a> {
    tx: &'a mut Tx,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let len = len.min(MTU);
        let result = f(&mut self.tx.buffer[..len]);
        let buffer = address(&*self.tx.buffer);
        self.tx
            .descriptor
            .give(buffer, len as u32 | TX_IOC, OWN | FD | LD);
        tx_tail();
        result
    }
}

impl embassy_net_driver::Driver for Ethernet {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Register first: a frame arriving after the check still wakes us.
        WAKER.register(cx.waker());
        if !self.tx.available() {
            return None;
        }
        let len = self.rx.next_frame()?;
        Some((
            RxToken {
                rx: &mut self.rx,
                len,
            },
            TxToken { tx: &mut self.tx },
        ))
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<Self::TxToken<'_>> {
        WAKER.register(cx.waker());
        self.tx.available().then_some(TxToken { tx: &mut self.tx })
    }

    fn link_state(&mut self, cx: &mut Context<'_>) -> LinkState {
        // Looked at again in half a second (embassy-net asks on every poll; a timer wakes it
        // while nothing else does), as embassy-stm32's PHY driver does.
        let _ = core::pin::pin!(embassy_time::Timer::after_millis(500)).poll(cx);
        let status = self.mdio.read(self.phy, PHY_STATUS);
        if status & (STATUS_LINK_UP | STATUS_AUTONEG_DONE) == STATUS_LINK_UP | STATUS_AUTONEG_DONE {
            LinkState::Up
        } else {
            LinkState::Down
        }
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
