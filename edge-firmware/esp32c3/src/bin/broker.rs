//! The Fulmar broker firmware for the ESP32-C3 over Wi-Fi: esp-hal 1.x with esp-rtos (the
//! scheduler and embassy executor esp-radio needs) and esp-radio's station interface under
//! embassy-net (address by DHCP), the broker from `fulmar-firmware`, defmt logs through
//! espflash. The network name and password come from the build environment:
//! `FULMAR_WIFI_SSID`, `FULMAR_WIFI_PASSWORD`. With the `flash-persistence` feature
//! (default), retained messages and persistent sessions are kept in the flash partition
//! labelled `fulmar` (`partitions.csv`, which `espflash.toml` has espflash write) and
//! restored at boot. With the `uplink` feature (default) and `FULMAR_UPLINK` in the build
//! environment (the uplink's settings separated by `;`, e.g.
//! `upstream 192.168.1.10:1883; up sensors/# 1; down commands/# 1`), it bridges to an
//! upstream broker (`fulmar_firmware::uplink`), its store-and-forward backlog persisted too.
#![no_std]
#![no_main]

use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_time::{Duration, Timer};
use esp_hal::clock::CpuClock;
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_println as _;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config, Interface, WifiController, sta::StationConfig,
};
use {esp_alloc as _, esp_backtrace as _};

esp_bootloader_esp_idf::esp_app_desc!();

/// The Wi-Fi network, from the build environment.
const SSID: &str = match option_env!("FULMAR_WIFI_SSID") {
    Some(ssid) => ssid,
    None => "fulmar",
};
const PASSWORD: &str = match option_env!("FULMAR_WIFI_PASSWORD") {
    Some(password) => password,
    None => "",
};

#[esp_rtos::main]
async fn main(spawner: Spawner) {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // The Wi-Fi driver allocates; the broker itself does not.
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    let rng = Rng::new();
    let seed = u64::from(rng.random()) << 32 | u64::from(rng.random());
    fulmar_firmware::server::start(seed, cfg!(feature = "flash-persistence"));
    #[cfg(feature = "flash-persistence")]
    start_persistence(&spawner, peripherals.FLASH).await;

    let mut controller = match WifiController::new(peripherals.WIFI, Default::default()) {
        Ok(controller) => controller,
        Err(e) => {
            warn!("Wi-Fi did not start: {}", e);
            return;
        }
    };
    let station = StationConfig::default()
        .with_ssid(SSID.try_into().unwrap_or_default())
        .with_authentication(if PASSWORD.is_empty() {
            AuthenticationMethodConfig::Open
        } else {
            AuthenticationMethodConfig::WpaWpa2Personal(PASSWORD.try_into().unwrap_or_default())
        });
    if let Err(e) = controller.set_config(&Config::Station(station)) {
        warn!("Wi-Fi configuration refused: {}", e);
        return;
    }
    spawner.spawn(keep_connected(controller).expect("one Wi-Fi task"));

    let config = embassy_net::Config::dhcpv4(Default::default());
    let stack = fulmar_firmware::spawn_network!(
        spawner,
        Interface,
        Interface::station(),
        config,
        seed,
        // DHCP's socket.
        extra_sockets = 1
    );
    // The uplink waits for the network itself (DHCP), and reconnects as it comes and goes.
    #[cfg(feature = "uplink")]
    fulmar_firmware::spawn_uplink!(spawner, stack, option_env!("FULMAR_UPLINK"));
    stack.wait_config_up().await;
    if let Some(v4) = stack.config_v4() {
        info!("address {}", v4.address);
    }
}

/// The partition that holds the persisted state (`partitions.csv`).
#[cfg(feature = "flash-persistence")]
const PARTITION: &str = "fulmar";

/// Finds the [`PARTITION`] data partition in the flash's partition table, restores the
/// persisted sessions and retained messages from it (before any client connects) and
/// starts writing changes there. Without that partition nothing is persisted: the store
/// never writes where the table does not say it may.
#[cfg(feature = "flash-persistence")]
async fn start_persistence(spawner: &Spawner, flash: esp_hal::peripherals::FLASH<'static>) {
    use embassy_embedded_hal::adapter::BlockingAsync;
    use esp_bootloader_esp_idf::partitions;
    use esp_storage::FlashStorage;
    use fulmar_firmware::persist;

    type Flash = BlockingAsync<FlashStorage<'static>>;

    #[embassy_executor::task]
    async fn persist_task(flash: Flash, range: core::ops::Range<u32>) -> ! {
        persist::run(flash, range).await
    }

    let mut flash = FlashStorage::new(flash);
    let range = {
        let mut table = [0u8; partitions::PARTITION_TABLE_MAX_LEN];
        let Ok(table) = partitions::read_partition_table(&mut flash, &mut table) else {
            warn!("no partition table: nothing will be persisted");
            return;
        };
        // The raw type (1: data), not `partition_type()`, which panics on a subtype it
        // does not know.
        table
            .iter()
            .find(|p| p.label_as_str() == PARTITION && p.raw_type() == 1)
            .map(|p| p.offset()..p.offset() + p.len())
    };
    let Some(range) = range else {
        warn!(
            "no `{=str}` data partition: nothing will be persisted",
            PARTITION
        );
        return;
    };
    info!(
        "persistence in flash {=u32:#x}..{=u32:#x}",
        range.start, range.end
    );
    // Flash operations block (the ROM routines run with the cache off); an erase of a
    // 4 KiB sector takes tens of milliseconds, during which nothing else runs.
    spawner.spawn(persist_task(BlockingAsync::new(flash), range).expect("one persistence task"));
    persist::restored().await;
}

/// Connects to the network and reconnects whenever the link drops.
#[embassy_executor::task]
async fn keep_connected(mut controller: WifiController<'static>) -> ! {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                info!("Wi-Fi connected to {=str}", SSID);
                let _ = controller.wait_for_disconnect_async().await;
                warn!("Wi-Fi disconnected");
            }
            Err(e) => warn!("Wi-Fi connection failed: {}", e),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}
