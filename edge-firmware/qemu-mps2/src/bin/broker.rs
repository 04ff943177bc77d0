//! The Fulmar broker firmware for the MPS2 AN386 under QEMU: MQTT on 10.0.2.15:1883 (QEMU's
//! user-mode network; `cargo xtask qemu --mqtt-port PORT` forwards a host port to it),
//! defmt logs over semihosting; with the `flash-persistence` feature (default), retained
//! messages and persistent sessions in `fulmar-flash.bin` in QEMU's working directory
//! (semihosting file I/O), restored at boot; with the `uplink` feature (default), a bridge
//! to an upstream broker when `fulmar-uplink.conf` in that directory (or `FULMAR_UPLINK` at
//! build time) configures one.
#![no_std]
#![no_main]

use defmt::{error, info};
use defmt_semihosting as _;
use embassy_executor::Spawner;
use embassy_net::Ipv4Address;
#[cfg(feature = "flash-persistence")]
use fulmar_firmware::persist;
use fulmar_qemu_mps2::lan9118::Lan9118;
use fulmar_qemu_mps2::{irq, time};

/// QEMU's user-mode network: the guest is 10.0.2.15, the host's gateway 10.0.2.2, its DNS
/// server (which asks the host's resolver) 10.0.2.3.
const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const DNS: Ipv4Address = Ipv4Address::new(10, 0, 2, 3);

defmt::timestamp!("{=u64:ms}", embassy_time::Instant::now().as_millis());

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    time::init();
    let nic = match Lan9118::new() {
        Ok(nic) => nic,
        Err(e) => {
            error!("LAN9118: {}", e);
            semihosting::process::exit(1);
        }
    };
    let mac = nic.mac();
    info!("LAN9118 up, MAC {=[u8]:02x}", mac);
    let seed = u64::from(nic.free_running_counter()) << 32
        | u64::from(u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]]));
    fulmar_firmware::server::start(seed, cfg!(feature = "flash-persistence"));
    #[cfg(feature = "flash-persistence")]
    start_persistence(&spawner).await;

    // Only the uplink looks names up: the broker alone carries no DNS server setting.
    let dns = cfg!(feature = "uplink").then_some(DNS);
    let config = fulmar_firmware::server::static_ipv4(ADDRESS, GATEWAY, dns);
    let _stack = fulmar_firmware::spawn_network!(spawner, Lan9118, nic, config, seed);
    defmt::info!("address {}", ADDRESS);
    #[cfg(feature = "uplink")]
    start_uplink(&spawner, _stack);
}

/// Starts the bridge uplink if `fulmar-uplink.conf` (in QEMU's working directory) or the
/// build's `FULMAR_UPLINK` configures one. `cargo xtask qemu --uplink-port PORT` writes the
/// file and has QEMU forward 10.0.2.100:1883 to that host port.
#[cfg(feature = "uplink")]
fn start_uplink(spawner: &Spawner, stack: embassy_net::Stack<'static>) {
    use semihosting::io::Read;

    static TEXT: static_cell::StaticCell<[u8; 512]> = static_cell::StaticCell::new();
    let text = TEXT.init([0; 512]);
    let from_file = semihosting::fs::File::open(c"fulmar-uplink.conf")
        .ok()
        .and_then(|mut file| file.read(text).ok())
        .and_then(|len| core::str::from_utf8(&text[..len]).ok());
    fulmar_firmware::spawn_uplink!(spawner, stack, from_file.or(option_env!("FULMAR_UPLINK")));
}

/// Restores the persisted sessions and retained messages (before any client connects) and
/// starts writing changes to the flash file.
#[cfg(feature = "flash-persistence")]
async fn start_persistence(spawner: &Spawner) {
    use fulmar_qemu_mps2::flash::{self, FileFlash};

    #[embassy_executor::task]
    async fn persist_task(flash: FileFlash) -> ! {
        persist::run(flash, 0..flash::SIZE).await
    }

    let Ok(file) = FileFlash::open() else {
        defmt::warn!("no flash file: nothing will be persisted");
        return;
    };
    spawner.spawn(persist_task(file).expect("one persistence task"));
    persist::restored().await;
}

// cortex-m-rt requires these handlers to be declared `unsafe fn`; their bodies are safe.
#[allow(unsafe_code)]
#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    irq::dispatch(irqn);
}

#[allow(unsafe_code)]
#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    error!("hard fault at pc {=u32:#x}", frame.pc());
    semihosting::process::exit(2)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fulmar_firmware::log_panic(info);
    // Ends QEMU with a failure status, so a test or CI run sees the crash.
    semihosting::process::exit(1)
}
