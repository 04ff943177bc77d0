//! The Fulmar broker firmware for the ESP32-C3 over Wi-Fi: esp-hal 1.x with esp-rtos (the
//! scheduler and embassy executor esp-radio needs) and esp-radio's station interface under
//! embassy-net (address by DHCP), the broker from `fulmar-firmware`, defmt logs through
//! espflash. The network name and password come from the build environment:
//! `FULMAR_WIFI_SSID`, `FULMAR_WIFI_PASSWORD`. The broker state is in RAM only on this
//! board. With the `uplink` feature (default) and `FULMAR_UPLINK` in the build
//! environment (the uplink's settings separated by `;`, e.g.
//! `upstream 192.168.1.10:1883; up sensors/# 1; down commands/# 1`), it bridges to an
//! upstream broker (`fulmar_firmware::uplink`), its store-and-forward backlog in RAM.
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
    fulmar_firmware::server::start(seed, false);

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
