//! The QEMU firmware (`edge-firmware/qemu-mps2`) for end-to-end tests: built once per test
//! process with cargo, booted in `qemu-system-arm` with its MQTT port forwarded to a free
//! loopback port, and killed when dropped.
//!
//! `FULMAR_FIRMWARE_ELF` names an ELF built elsewhere instead. The board's defmt logs
//! (binary frames on QEMU's stdout) go to a file beside the firmware build; when a test
//! panics they are decoded with `defmt-print` (installed by `cargo xtask test`'s setup) and
//! printed, so a failure shows the firmware's side too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::free_port;

#[path = "../../xtask/src/trim_paths.rs"]
mod trim_paths;

/// How long the firmware gets to boot and answer a CONNECT (build time comes before).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The firmware's target triple and its release ELF's name.
const TARGET: &str = "thumbv7em-none-eabihf";
const BIN: &str = "fulmar-qemu-mps2";

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// Where firmware builds go: `$CARGO_TARGET_DIR/firmware` (as `cargo xtask` builds it), or
/// `target/firmware` in the repository.
fn firmware_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("firmware")
}

/// The QEMU firmware ELF: `$FULMAR_FIRMWARE_ELF`, else built (once per test process, a
/// no-op when up to date) with `cargo build --release` in `edge-firmware/qemu-mps2`.
pub fn firmware_elf() -> &'static Path {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| {
        if let Some(elf) = std::env::var_os("FULMAR_FIRMWARE_ELF") {
            return PathBuf::from(elf);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let target_dir = firmware_target_dir();
        let status = Command::new(cargo)
            // The flags `cargo xtask` builds the firmware with, so either build serves both.
            .args([
                "--config",
                &trim_paths::config(root()),
                "build",
                "--release",
            ])
            .current_dir(root().join("edge-firmware").join("qemu-mps2"))
            .env("CARGO_TARGET_DIR", &target_dir)
            // The board's own .cargo/config.toml picks the target; a host-side override
            // from the test's environment must not.
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("run cargo build for the firmware");
        assert!(status.success(), "building the QEMU firmware failed");
        target_dir.join(TARGET).join("release").join(BIN)
    })
}

/// The firmware booted in QEMU, killed when dropped.
#[derive(Debug)]
pub struct Board {
    child: Child,
    port: u16,
    log: PathBuf,
    /// QEMU's working directory, where the firmware keeps its flash file.
    state: PathBuf,
    /// Whether `state` was made for this board (and goes when it is dropped).
    owns_state: bool,
}

/// The uplink configuration file the board reads at boot, in its state directory.
pub const UPLINK_CONF: &str = "fulmar-uplink.conf";

impl Board {
    /// Boots the firmware and waits until its broker answers a CONNECT.
    ///
    /// # Panics
    /// If `qemu-system-arm` is missing or the broker does not answer within
    /// [`BOOT_TIMEOUT`].
    pub fn boot() -> Self {
        Self::boot_fresh(None)
    }

    /// Boots the firmware with its bridge uplink configured by `config` (the text of
    /// [`UPLINK_CONF`]), its connections to 10.0.2.100:1883 relayed to
    /// `127.0.0.1:uplink_port`, and waits until its broker answers a CONNECT.
    ///
    /// # Panics
    /// As [`Board::boot`].
    pub fn boot_with_uplink(uplink_port: u16, config: &str) -> Self {
        Self::boot_fresh(Some((uplink_port, config)))
    }

    fn boot_fresh(uplink: Option<(u16, &str)>) -> Self {
        static BOOTS: AtomicUsize = AtomicUsize::new(0);
        let state = firmware_target_dir().join("qemu-state").join(format!(
            "{}-{}",
            std::process::id(),
            BOOTS.fetch_add(1, Ordering::Relaxed)
        ));
        // A new board starts with erased flash.
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).expect("create the board's state directory");
        if let Some((_, config)) = uplink {
            std::fs::write(state.join(UPLINK_CONF), config).expect("write the uplink config");
        }
        let mut board = Self::start(&state, uplink.map(|(port, _)| port));
        board.owns_state = true;
        board
    }

    /// Boots the firmware with `state` as QEMU's working directory: a board booted again in
    /// the directory of an earlier one finds what that one persisted in its flash file.
    ///
    /// # Panics
    /// As [`Board::boot`].
    pub fn boot_in(state: &Path) -> Self {
        Self::start(state, None)
    }

    /// [`Board::boot_in`] with the uplink relayed to `127.0.0.1:uplink_port` (its
    /// configuration is the [`UPLINK_CONF`] already in `state`).
    ///
    /// # Panics
    /// As [`Board::boot`].
    pub fn boot_in_with_uplink(state: &Path, uplink_port: u16) -> Self {
        Self::start(state, Some(uplink_port))
    }

    fn start(state: &Path, uplink_port: Option<u16>) -> Self {
        let elf = firmware_elf();
        let logs = firmware_target_dir().join("qemu-logs");
        std::fs::create_dir_all(&logs).expect("create the QEMU log directory");
        std::fs::create_dir_all(state).expect("create the board's state directory");
        // QEMU binds the forwarded port itself: a port taken in the meantime makes it exit
        // at once, and another is tried.
        for _ in 0..5 {
            let port = free_port();
            let log = logs.join(format!("{port}.defmt"));
            let out = std::fs::File::create(&log).expect("create the QEMU log");
            let child = Command::new("qemu-system-arm")
                .args(qemu_args(elf, port, uplink_port))
                .current_dir(state)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start qemu-system-arm ({e}); `cargo xtask test setup` installs it"
                    )
                });
            let mut board = Self {
                child,
                port,
                log,
                state: state.to_owned(),
                owns_state: false,
            };
            if board.wait_ready() {
                return board;
            }
        }
        panic!("the firmware did not boot in QEMU");
    }

    /// Waits until a CONNECT gets a CONNACK; `false` if QEMU exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("qemu-system-arm exited during boot: {status}");
                return false;
            }
            if connack_from(self.addr()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the firmware broker did not answer within {BOOT_TIMEOUT:?}");
    }

    /// The broker's address on the host.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The broker's port on the host.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// QEMU's working directory, which holds the firmware's flash file.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The firmware's flash file (its persisted state) as it is now.
    pub fn flash(&self) -> Vec<u8> {
        std::fs::read(self.state.join("fulmar-flash.bin")).unwrap_or_default()
    }

    /// Cuts the power: kills QEMU (SIGKILL), leaving the flash file as it is.
    pub fn power_off(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether QEMU is still running (the firmware exits it on a panic or fault).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The firmware's logs so far, decoded by `defmt-print` (empty if it is missing).
    pub fn decoded_log(&self) -> String {
        let Ok(input) = std::fs::File::open(&self.log) else {
            return String::new();
        };
        Command::new("defmt-print")
            .arg("-e")
            .arg(firmware_elf())
            .stdin(input)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- firmware log ({}) ---\n{}",
                self.log.display(),
                self.decoded_log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
            if self.owns_state {
                let _ = std::fs::remove_dir_all(&self.state);
            }
        }
    }
}

/// The QEMU command line (`edge-firmware/qemu-mps2/qemu-args`, which `cargo xtask qemu`
/// uses too) for `elf` with MQTT on host port `port` and, with `uplink_port`, the board's
/// uplink connections (to 10.0.2.100:1883) relayed by `socat` to that host port.
fn qemu_args(elf: &Path, port: u16, uplink_port: Option<u16>) -> Vec<String> {
    let (port, elf) = (port.to_string(), elf.display().to_string());
    let uplink = uplink_port.map_or(String::new(), |up| {
        format!(",guestfwd=tcp:10.0.2.100:1883-cmd:socat -lf /dev/null STDIO TCP:127.0.0.1:{up}")
    });
    include_str!("../../edge-firmware/qemu-mps2/qemu-args")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|arg| {
            arg.replace("{port}", &port)
                .replace("{uplink}", &uplink)
                .replace("{elf}", &elf)
        })
        .collect()
}

/// CONNECT (MQTT 3.1.1, clean session, keep alive 60 s, client id "boot-probe"), then
/// DISCONNECT: whether a CONNACK came back.
fn connack_from(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut connect = vec![
        0x10, 22, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 10,
    ];
    connect.extend_from_slice(b"boot-probe");
    if stream.write_all(&connect).is_err() {
        return false;
    }
    let mut connack = [0u8; 4];
    let ok = stream.read_exact(&mut connack).is_ok() && connack[..2] == [0x20, 2];
    let _ = stream.write_all(&[0xE0, 0]);
    ok
}
