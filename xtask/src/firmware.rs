//! The firmware (`edge-firmware/`, its own cargo workspace): `cargo xtask qemu` boots the
//! QEMU board, and the `firmware` suite of `cargo xtask test` lints and builds it.
//!
//! The QEMU board is the Arm MPS2 AN386 (`edge-firmware/qemu-mps2`, Cortex-M4F) under
//! Debian's `qemu-system-arm`, its LAN9118 NIC on QEMU's user-mode network with the MQTT
//! port forwarded to the host (`restrict=on`: the guest reaches nothing else but, with
//! `--uplink-port`, an upstream broker on the host through QEMU's `guestfwd` and `socat`).
//! Its logs are defmt frames on semihosting stdout, decoded by `defmt-print` against the
//! ELF.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::USAGE_ERROR;
use crate::exec::Ctx;
use crate::report::SuiteResult;
use crate::setup;

/// The firmware's target: the QEMU board's (and common STM32s') Cortex-M4F.
pub(crate) const TARGET: &str = "thumbv7em-none-eabihf";
/// The QEMU board crate, relative to the repository root.
const QEMU_BOARD: &str = "edge-firmware/qemu-mps2";
/// Its binary.
const QEMU_BIN: &str = "fulmar-qemu-mps2";
/// The NUCLEO-H743ZI board crate (built in CI, flashed with probe-rs by hand) and binary.
const STM32_BOARD: &str = "edge-firmware/stm32-h743";
const STM32_BIN: &str = "fulmar-stm32-h743";
/// The ESP32-C3 board crate (its own workspace: another target), its target and binary.
const ESP32C3_BOARD: &str = "edge-firmware/esp32c3";
const ESP32C3_TARGET: &str = "riscv32imc-unknown-none-elf";
const ESP32C3_BIN: &str = "fulmar-esp32c3";
/// MQTT port on the host when `--mqtt-port` is not given.
const DEFAULT_MQTT_PORT: u16 = 1883;
/// The Debian packages with `qemu-system-arm` and `socat` (which relays the board's uplink
/// connections to the host).
const QEMU_PACKAGES: [&str; 2] = ["qemu-system-arm", "socat"];
/// The uplink configuration file the QEMU board reads at boot, in QEMU's working directory.
const UPLINK_CONF: &str = "fulmar-uplink.conf";
/// What `--uplink-port` writes to [`UPLINK_CONF`] when there is none: 10.0.2.100:1883 is
/// where QEMU relays the board's uplink to the host port.
const DEFAULT_UPLINK_CONF: &str = "upstream 10.0.2.100:1883\nclient-id fulmar-qemu\n\
                                   up sensors/# 1\ndown commands/# 1\n";

/// The QEMU command line that boots `elf` with the board's MQTT port on
/// `127.0.0.1:mqtt_port` and, with `uplink_port`, its uplink relayed to
/// `127.0.0.1:uplink_port` (`edge-firmware/qemu-mps2/qemu-args`, shared with the tests).
pub(crate) fn qemu_args(elf: &Path, mqtt_port: u16, uplink_port: Option<u16>) -> Vec<String> {
    let uplink = uplink_port.map_or(String::new(), |port| {
        format!(",guestfwd=tcp:10.0.2.100:1883-cmd:socat -lf /dev/null STDIO TCP:127.0.0.1:{port}")
    });
    include_str!("../../edge-firmware/qemu-mps2/qemu-args")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|arg| {
            arg.replace("{port}", &mqtt_port.to_string())
                .replace("{uplink}", &uplink)
                .replace("{elf}", &elf.display().to_string())
        })
        .collect()
}

/// The ports `cargo xtask qemu` was given.
#[derive(Debug, PartialEq, Eq)]
struct Ports {
    mqtt: u16,
    uplink: Option<u16>,
}

/// `cargo xtask qemu [--mqtt-port PORT] [--uplink-port PORT]`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let ports = match parse_ports(args) {
        Ok(ports) => ports,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", help());
            return ExitCode::from(USAGE_ERROR);
        }
    };
    match run_qemu(&ports) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn help() -> String {
    format!(
        "usage: cargo xtask qemu [--mqtt-port PORT] [--uplink-port PORT]\n\n\
         Builds the QEMU firmware ({QEMU_BOARD}, release) and boots it in qemu-system-arm \
         (MPS2 AN386),\nwith the broker's MQTT port forwarded to 127.0.0.1:PORT (default \
         {DEFAULT_MQTT_PORT}).\nWith --uplink-port, the board's bridge uplink (to \
         10.0.2.100:1883) reaches an MQTT broker on\n127.0.0.1:PORT; its configuration is \
         {UPLINK_CONF} in the board's state directory (written\nwith sensors/# up and \
         commands/# down when missing).\nIts defmt logs are decoded on stdout; it runs \
         until stopped (Ctrl-C). Installs qemu-system-arm,\nsocat and defmt-print if they \
         are missing.\n"
    )
}

fn parse_ports(args: &[String]) -> Result<Ports, String> {
    let mut ports = Ports {
        mqtt: DEFAULT_MQTT_PORT,
        uplink: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let port = match flag.as_str() {
            "--mqtt-port" | "--uplink-port" => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("{flag} wants a port number"))?;
                value
                    .parse()
                    .map_err(|_| format!("{flag} wants a port number, not {value:?}"))?
            }
            other => return Err(format!("unexpected argument: {other}")),
        };
        if flag == "--mqtt-port" {
            ports.mqtt = port;
        } else {
            ports.uplink = Some(port);
        }
    }
    Ok(ports)
}

fn run_qemu(ports: &Ports) -> Result<ExitCode, String> {
    let ctx = Ctx::new()?;
    let mut installed = Vec::new();
    ensure_tools(&ctx, &mut installed)?;
    let elf = build_qemu_firmware(&ctx, &[])?;
    let args = qemu_args(&elf, ports.mqtt, ports.uplink);
    // The firmware keeps its flash file (persisted state) in QEMU's working directory.
    let state = firmware_target_dir(&ctx).join("qemu-state");
    std::fs::create_dir_all(&state)
        .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    println!(
        "state (flash file): {}",
        state.join("fulmar-flash.bin").display()
    );
    let conf = state.join(UPLINK_CONF);
    if ports.uplink.is_some() && !conf.exists() {
        std::fs::write(&conf, DEFAULT_UPLINK_CONF)
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    }
    if conf.exists() {
        println!("uplink configuration: {}", conf.display());
    }
    println!(
        "$ qemu-system-arm {} | defmt-print -e {}",
        args.join(" "),
        elf.display()
    );
    println!("MQTT on 127.0.0.1:{}; Ctrl-C stops the board", ports.mqtt);
    let mut qemu = Command::new("qemu-system-arm")
        .args(&args)
        .current_dir(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-arm: {e}"))?;
    let frames = qemu.stdout.take().ok_or("qemu's stdout is not piped")?;
    let mut decoder = Command::new("defmt-print")
        .arg("-e")
        .arg(&elf)
        .stdin(frames)
        .spawn()
        .map_err(|e| format!("cannot start defmt-print: {e}"))?;
    let status = qemu.wait().map_err(|e| format!("waiting for qemu: {e}"))?;
    // defmt-print ends when QEMU's stdout closes.
    let _ = decoder.wait();
    println!("qemu exited: {status}");
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The tools to build and boot the firmware: the target, QEMU, socat, defmt-print.
pub(crate) fn ensure_tools(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    setup::ensure_targets(ctx, &[TARGET], installed)?;
    installed.extend(setup::ensure_debian_packages(ctx, &QEMU_PACKAGES)?);
    ensure_defmt_print(ctx, installed)
}

fn ensure_defmt_print(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    if ctx
        .probe(&mut ctx.command("defmt-print", ["--version"]))
        .is_ok_and(|probe| probe.success)
    {
        println!("setup: defmt-print: present");
        return Ok(());
    }
    println!("setup: installing defmt-print (decodes the firmware's logs)");
    ctx.run(&mut ctx.cargo(["install", "defmt-print", "--locked"]))?;
    installed.push("defmt-print".to_owned());
    Ok(())
}

/// Builds the QEMU firmware in release mode (with `extra` cargo arguments, such as
/// `--no-default-features`) and returns its ELF.
pub(crate) fn build_qemu_firmware(ctx: &Ctx, extra: &[&str]) -> Result<PathBuf, String> {
    let args = [&["build", "--release"][..], extra].concat();
    ctx.run(&mut firmware_cargo(ctx, &args))?;
    Ok(firmware_target_dir(ctx)
        .join(TARGET)
        .join("release")
        .join(QEMU_BIN))
}

/// The bridge uplink configuration the ESP32-C3 firmware is built with: without one the
/// compiler leaves the (unconfigured) uplink out, and CI would neither link nor measure it.
const ESP32C3_UPLINK: &str = "upstream 192.168.1.10:1883; up sensors/# 1; down commands/# 1";

/// Builds the ESP32-C3 firmware in release mode, with its uplink configured
/// ([`ESP32C3_UPLINK`]), and returns its ELF.
pub(crate) fn build_esp32c3_firmware(ctx: &Ctx) -> Result<PathBuf, String> {
    let env = [("FULMAR_UPLINK", ESP32C3_UPLINK)];
    build_board(ctx, ESP32C3_BOARD, ESP32C3_TARGET, ESP32C3_BIN, &env, &[])
}

/// Builds the NUCLEO-H743ZI firmware in release mode and returns its ELF.
pub(crate) fn build_stm32_firmware(ctx: &Ctx) -> Result<PathBuf, String> {
    build_board(ctx, STM32_BOARD, TARGET, STM32_BIN, &[], &[])
}

/// Builds the NUCLEO-H743ZI firmware with flash persistence in release mode and returns its
/// ELF (the same path as [`build_stm32_firmware`]'s: measure it before building the other).
pub(crate) fn build_stm32_persistence_firmware(ctx: &Ctx) -> Result<PathBuf, String> {
    let features = ["--features", "flash-persistence"];
    build_board(ctx, STM32_BOARD, TARGET, STM32_BIN, &[], &features)
}

/// `cargo build --release` with `extra` arguments in a board's folder (so its
/// `.cargo/config.toml` applies) with environment `env`, and the path of its binary `bin`
/// built for `target`.
fn build_board(
    ctx: &Ctx,
    board: &str,
    target: &str,
    bin: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Result<PathBuf, String> {
    let args = [&["build", "--release"][..], extra].concat();
    let mut build = firmware_cargo(ctx, &args);
    build
        .current_dir(ctx.root.join(board))
        .envs(env.iter().copied());
    ctx.run(&mut build)?;
    Ok(firmware_target_dir(ctx)
        .join(target)
        .join("release")
        .join(bin))
}

/// Where firmware builds go: their own directory, since the firmware is its own workspace
/// with its own profiles.
fn firmware_target_dir(ctx: &Ctx) -> PathBuf {
    ctx.target_dir.join("firmware")
}

/// `cargo args...` in the QEMU board's folder (its `.cargo/config.toml` names the target),
/// with source paths relative to the repository and the registry (`trim_paths`: firmware
/// sizes independent of where the checkout is).
fn firmware_cargo(ctx: &Ctx, args: &[&str]) -> Command {
    let mut command = ctx.cargo(["--config", &crate::trim_paths::config(&ctx.root)]);
    command.args(args);
    command
        .current_dir(ctx.root.join(QEMU_BOARD))
        .env("CARGO_TARGET_DIR", firmware_target_dir(ctx));
    command
}

/// The `firmware` suite: formatting, clippy (default features, none, all) and
/// release builds of the QEMU, NUCLEO-H743ZI (with flash persistence, then broker only)
/// and ESP32-C3 firmware.
pub(crate) fn suite(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    let mut installed = Vec::new();
    result.check(setup::ensure_targets(
        ctx,
        &[TARGET, ESP32C3_TARGET],
        &mut installed,
    ));
    let clippy = ["clippy", "--release", "--workspace", "--all-targets"];
    let deny = ["--", "-D", "warnings"];
    for args in [
        vec!["fmt", "--all", "--", "--check"],
        [&clippy[..], &deny[..]].concat(),
        // The board without flash persistence (what `cargo xtask size` holds to its goal).
        [&clippy[..], &["--no-default-features"][..], &deny[..]].concat(),
        // Every feature of every board (the NUCLEO-H743ZI's opt-in uplink).
        [&clippy[..], &["--all-features"][..], &deny[..]].concat(),
    ] {
        result.check(ctx.run(&mut firmware_cargo(ctx, &args)));
    }
    result.check(build_qemu_firmware(ctx, &[]).map(|_| ()));
    result.check(build_stm32_persistence_firmware(ctx).map(|_| ()));
    result.check(build_stm32_firmware(ctx).map(|_| ()));
    // The ESP32-C3 crate is a workspace of its own: formatting and lints there too.
    for args in [
        vec!["fmt", "--", "--check"],
        [&clippy[..2], &["--all-targets"][..], &deny[..]].concat(),
    ] {
        let mut command = firmware_cargo(ctx, &args);
        command.current_dir(ctx.root.join(ESP32C3_BOARD));
        result.check(ctx.run(&mut command));
    }
    result.check(build_esp32c3_firmware(ctx).map(|_| ()));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn ports_default_and_parse() {
        let ports = |mqtt, uplink| Ok(Ports { mqtt, uplink });
        assert_eq!(parse_ports(&[]), ports(DEFAULT_MQTT_PORT, None));
        let args = strings(&["--mqtt-port", "18830"]);
        assert_eq!(parse_ports(&args), ports(18830, None));
        let args = strings(&["--uplink-port", "1884", "--mqtt-port", "18830"]);
        assert_eq!(parse_ports(&args), ports(18830, Some(1884)));
        assert!(parse_ports(&strings(&["--mqtt-port"])).is_err());
        assert!(parse_ports(&strings(&["--mqtt-port", "x"])).is_err());
        assert!(parse_ports(&strings(&["--port", "1"])).is_err());
    }

    #[test]
    fn qemu_forwards_only_the_mqtt_port_on_loopback() {
        let args = qemu_args(Path::new("/fw.elf"), 18830, None).join(" ");
        assert!(args.contains("-machine mps2-an386"), "{args}");
        assert!(
            args.contains("restrict=on,hostfwd=tcp:127.0.0.1:18830-:1883 "),
            "{args}"
        );
        assert!(args.ends_with("-kernel /fw.elf"), "{args}");
    }

    #[test]
    fn the_uplink_is_relayed_to_its_host_port() {
        let args = qemu_args(Path::new("/fw.elf"), 18830, Some(1884)).join(" ");
        assert!(
            args.contains(
                "hostfwd=tcp:127.0.0.1:18830-:1883,\
                 guestfwd=tcp:10.0.2.100:1883-cmd:socat -lf /dev/null STDIO TCP:127.0.0.1:1884 "
            ),
            "{args}"
        );
    }
}
