//! The Fulmar broker firmware for the NUCLEO-H743ZI: MQTT on port 1883 of 192.168.1.50/24
//! (gateway 192.168.1.1; change [`ADDRESS`] and [`GATEWAY`] for your network), the board's
//! RMII Ethernet (LAN8742A PHY) through this crate's driver (`eth`), `embassy-time` on
//! SysTick, clocks and pins set by embassy-stm32, defmt logs over RTT. The
//! broker state is in RAM only on this board (no flash persistence yet). With the `uplink`
//! feature, a bridge to an upstream broker configured at build time by `FULMAR_UPLINK`
//! (`fulmar_firmware::uplink`; its backlog is in RAM here).
#![no_std]
#![no_main]

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::Ipv4Address;
use embassy_stm32::{Config, bind_interrupts};
use fulmar_stm32_h743::eth::{self, Buffers, Ethernet, RmiiPins};
use static_cell::ConstStaticCell;

/// The board's address; static, so the broker is reachable at a known place.
const ADDRESS: Ipv4Address = Ipv4Address::new(192, 168, 1, 50);
const GATEWAY: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
/// The core clock [`clocks`] sets (SysTick counts it).
const SYSCLK: u32 = 400_000_000;
/// The AHB clock [`clocks`] sets (the MDIO clock divides it).
const HCLK: u32 = SYSCLK / 2;
/// A locally administered MAC address.
const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xF0, 0x1A, 0x00];

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
});

defmt::timestamp!("{=u64:ms}", embassy_time::Instant::now().as_millis());

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks());
    match cortex_m::Peripherals::take() {
        Some(core) => fulmar_stm32_h743::time::init(core.SYST, SYSCLK),
        // Nothing takes them before `main`; were it to, timers would never fire.
        None => defmt::error!("SysTick taken: no time driver"),
    }
    // The hardware RNG seeds the broker's hash indexes and the TCP sequence numbers; should
    // it fail, the MCU's unique id keeps boards apart (but not one board's boots).
    let seed = fulmar_stm32_h743::rng::seed(p.RNG).unwrap_or_else(|| {
        defmt::warn!("RNG failed: seeding from the unique id");
        let id = embassy_stm32::uid::uid();
        u64::from_le_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]])
    });
    fulmar_firmware::server::start(seed, false);

    // NUCLEO-H743ZI RMII pins (UM2407): REF_CLK PA1, CRS_DV PA7, RXD0 PC4, RXD1 PC5,
    // TXD0 PG13, TXD1 PB13, TX_EN PG11; MDIO PA2, MDC PC1. The frame buffers are all zero
    // bytes, in `.bss` (AXI SRAM, which the Ethernet DMA reaches).
    static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers::new());
    let pins = RmiiPins {
        ref_clk: p.PA1,
        crs_dv: p.PA7,
        rx_d0: p.PC4,
        rx_d1: p.PC5,
        tx_d0: p.PG13,
        tx_d1: p.PB13,
        tx_en: p.PG11,
        mdio: p.PA2,
        mdc: p.PC1,
    };
    let device = Ethernet::new(BUFFERS.take(), p.ETH, Irqs, pins, p.ETH_SMA, HCLK, MAC);
    let config = fulmar_firmware::server::static_ipv4(ADDRESS, GATEWAY);
    let _stack = fulmar_firmware::spawn_network!(spawner, Ethernet, device, config, seed);
    defmt::info!("address {}", ADDRESS);
    #[cfg(feature = "uplink")]
    fulmar_firmware::spawn_uplink!(spawner, _stack, option_env!("FULMAR_UPLINK"));
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
