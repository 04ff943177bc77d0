//! The Fulmar broker firmware for the NUCLEO-H743ZI: MQTT on port 1883 of 192.168.1.50/24
//! (gateway 192.168.1.1, which the uplink also asks for DNS; change [`ADDRESS`] and
//! [`GATEWAY`] for your network), the board's
//! RMII Ethernet (LAN8742A PHY) through embassy-stm32's driver, clocks, pins, RNG and the
//! `embassy-time` driver from embassy-stm32 too, defmt logs over RTT. The broker state is
//! in RAM only, unless built with `flash-persistence`: then retained messages and
//! persistent sessions are kept in the last four sectors of flash bank 2
//! ([`PERSIST_RANGE`], embassy-stm32's async flash driver) and restored at boot. With the
//! `uplink` feature, a bridge to an upstream broker configured at build time by
//! `FULMAR_UPLINK` (`fulmar_firmware::uplink`; its backlog is in flash too with
//! `flash-persistence`, in RAM without).
#![no_std]
#![no_main]

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::Ipv4Address;
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::rng::Rng;
use embassy_stm32::{Config, bind_interrupts, eth, peripherals, rng};
use static_cell::ConstStaticCell;

/// The board's address; static, so the broker is reachable at a known place.
const ADDRESS: Ipv4Address = Ipv4Address::new(192, 168, 1, 50);
const GATEWAY: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
/// A locally administered MAC address.
const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xF0, 0x1A, 0x00];

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<peripherals::RNG>;
    #[cfg(feature = "flash-persistence")]
    FLASH => embassy_stm32::flash::InterruptHandler;
});

/// Where the persisted state lives, as offsets from the start of flash (0x0800_0000): the
/// last four 128 KiB sectors of bank 2 (bank 2 starts at 1 MiB), clear of the program,
/// which `memory.x` keeps in bank 1. 512 KiB: the store uses three sectors and keeps one
/// erased for its garbage collection.
#[cfg(feature = "flash-persistence")]
const PERSIST_RANGE: core::ops::Range<u32> = 0x18_0000..0x20_0000;

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// The driver's frame buffers at the smallest it accepts: one to transmit, two to receive
/// (its receive ring needs two descriptors). Each holds a whole 1 514/1 536-byte frame, 4.6
/// KB in all; more would let the MAC take a burst while the CPU is busy, at 1.5 KB each.
type Packets = PacketQueue<1, 2>;

defmt::timestamp!("{=u64:ms}", embassy_time::Instant::now().as_millis());

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks());
    // The hardware RNG seeds the broker's hash indexes and the TCP sequence numbers.
    let seed = Rng::new(p.RNG, Irqs).next_u64();
    let persistent = cfg!(feature = "flash-persistence");
    fulmar_firmware::server::start(seed, persistent);
    #[cfg(feature = "flash-persistence")]
    start_persistence(&spawner, p.FLASH).await;

    // NUCLEO-H743ZI RMII pins (UM2407): REF_CLK PA1, CRS_DV PA7, RXD0 PC4, RXD1 PC5,
    // TXD0 PG13, TXD1 PB13, TX_EN PG11; MDIO PA2, MDC PC1. The queue is all zero bytes, in
    // `.bss` (AXI SRAM, which the Ethernet DMA reaches), never built on the stack.
    static PACKETS: ConstStaticCell<Packets> = ConstStaticCell::new(PacketQueue::new());
    let device = Ethernet::new(
        PACKETS.take(),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        MAC,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );
    // Only the uplink looks names up: the broker alone carries no DNS server setting.
    let dns = cfg!(feature = "uplink").then_some(GATEWAY);
    let config = fulmar_firmware::server::static_ipv4(ADDRESS, GATEWAY, dns);
    let _stack = fulmar_firmware::spawn_network!(spawner, Device, device, config, seed);
    defmt::info!("address {}", ADDRESS);
    #[cfg(feature = "uplink")]
    fulmar_firmware::spawn_uplink!(spawner, _stack, option_env!("FULMAR_UPLINK"));
}

/// Restores the persisted sessions and retained messages (before any client connects) and
/// starts writing changes to flash bank 2.
#[cfg(feature = "flash-persistence")]
async fn start_persistence(
    spawner: &Spawner,
    flash: embassy_stm32::Peri<'static, peripherals::FLASH>,
) {
    use embassy_stm32::flash::Flash;
    use fulmar_firmware::persist;

    #[embassy_executor::task]
    async fn persist_task(flash: Flash<'static>) -> ! {
        persist::run(flash, PERSIST_RANGE).await
    }

    spawner.spawn(persist_task(Flash::new(flash, Irqs)).expect("one persistence task"));
    persist::restored().await;
}

/// 400 MHz from the internal oscillator (the Nucleo has no crystal fitted on HSE by
/// default), HSI48 for the RNG.
fn clocks() -> Config {
    use embassy_stm32::rcc::{
        AHBPrescaler, APBPrescaler, HSIPrescaler, Pll, PllDiv, PllMul, PllPreDiv, PllSource,
        Sysclk, VoltageScale,
    };
    let mut config = Config::default();
    config.rcc.hsi = Some(HSIPrescaler::DIV1);
    config.rcc.csi = true;
    config.rcc.hsi48 = Some(Default::default());
    config.rcc.pll1 = Some(Pll {
        source: PllSource::HSI,
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL50,
        divp: Some(PllDiv::DIV2),
        divq: None,
        divr: None,
        fracn: None,
    });
    config.rcc.sys = Sysclk::PLL1_P;
    config.rcc.ahb_pre = AHBPrescaler::DIV2;
    config.rcc.apb1_pre = APBPrescaler::DIV2;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.apb3_pre = APBPrescaler::DIV2;
    config.rcc.apb4_pre = APBPrescaler::DIV2;
    config.rcc.voltage_scale = VoltageScale::Scale1;
    config
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cortex_m::interrupt::disable();
    fulmar_firmware::log_panic(info);
    // An undefined instruction: a HardFault, which `probe-rs run` reports and stops on.
    cortex_m::asm::udf()
}
