//! The firmware (`edge-firmware/`, its own cargo workspace): `cargo xtask qemu` boots the
//! QEMU board, and the `firmware` suite of `cargo xtask test` lints and builds it.
//!
//! The QEMU board is the Arm MPS2 AN386 (`edge-firmware/qemu-mps2`, Cortex-M4F) under
//! Debian's `qemu-system-arm`, its LAN9118 NIC on QEMU's user-mode network with the MQTT
//! port forwarded to the host (`restrict=on`: the guest reaches nothing else). Its logs are
//! defmt frames on semihosting stdout, decoded by `defmt-print` against the ELF.

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
/// The Debian package with `qemu-system-arm`.
const QEMU_PACKAGE: &str = "qemu-system-arm";

/// The QEMU command line that boots `elf` with the board's MQTT port on
/// `127.0.0.1:mqtt_port` (`edge-firmware/qemu-mps2/qemu-args`, shared with the tests).
pub(crate) fn qemu_args(elf: &Path, mqtt_port: u16) -> Vec<String> {
    include_str!("../../edge-firmware/qemu-mps2/qemu-args")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|arg| {
            arg.replace("{port}", &mqtt_port.to_string())
                .replace("{elf}", &elf.display().to_string())
        })
        .collect()
}

/// `cargo xtask qemu [--mqtt-port PORT]`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let port = match parse_port(args) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", help());
            return ExitCode::from(USAGE_ERROR);
        }
    };
    match run_qemu(port) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn help() -> String {
    format!(
        "usage: cargo xtask qemu [--mqtt-port PORT]\n\n\
         Builds the QEMU firmware ({QEMU_BOARD}, release) and boots it in qemu-system-arm \
         (MPS2 AN386),\nwith the broker's MQTT port forwarded to 127.0.0.1:PORT (default \
         {DEFAULT_MQTT_PORT}).\nIts defmt logs are decoded on stdout; it runs until stopped \
         (Ctrl-C). Installs qemu-system-arm\nand defmt-print if they are missing.\n"
    )
}

fn parse_port(args: &[String]) -> Result<u16, String> {
    match args {
        [] => Ok(DEFAULT_MQTT_PORT),
        [flag, value] if flag == "--mqtt-port" => value
            .parse()
            .map_err(|_| format!("--mqtt-port wants a port number, not {value:?}")),
        [flag] if flag == "--mqtt-port" => Err("--mqtt-port wants a port number".to_owned()),
        other => Err(format!("unexpected arguments: {}", other.join(" "))),
    }
}

fn run_qemu(port: u16) -> Result<ExitCode, String> {
    let ctx = Ctx::new()?;
    let mut installed = Vec::new();
    ensure_tools(&ctx, &mut installed)?;
    let elf = build_qemu_firmware(&ctx, &[])?;
    let args = qemu_args(&elf, port);
    // The firmware keeps its flash file (persisted state) in QEMU's working directory.
    let state = firmware_target_dir(&ctx).join("qemu-state");
    std::fs::create_dir_all(&state)
        .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    println!(
        "state (flash file): {}",
        state.join("fulmar-flash.bin").display()
    );
    println!(
        "$ qemu-system-arm {} | defmt-print -e {}",
        args.join(" "),
        elf.display()
    );
    println!("MQTT on 127.0.0.1:{port}; Ctrl-C stops the board");
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

/// The tools to build and boot the firmware: the target, QEMU, defmt-print.
pub(crate) fn ensure_tools(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    setup::ensure_targets(ctx, &[TARGET], installed)?;
    installed.extend(setup::ensure_debian_packages(ctx, &[QEMU_PACKAGE])?);
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

/// Builds the ESP32-C3 firmware in release mode and returns its ELF.
pub(crate) fn build_esp32c3_firmware(ctx: &Ctx) -> Result<PathBuf, String> {
    build_board(ctx, ESP32C3_BOARD, ESP32C3_TARGET, ESP32C3_BIN)
}

/// Builds the NUCLEO-H743ZI firmware in release mode and returns its ELF.
pub(crate) fn build_stm32_firmware(ctx: &Ctx) -> Result<PathBuf, String> {
    build_board(ctx, STM32_BOARD, TARGET, STM32_BIN)
}

/// `cargo build --release` in a board's folder (so its `.cargo/config.toml` applies), and
/// the path of its binary `bin` built for `target`.
fn build_board(ctx: &Ctx, board: &str, target: &str, bin: &str) -> Result<PathBuf, String> {
    let mut build = firmware_cargo(ctx, &["build", "--release"]);
    build.current_dir(ctx.root.join(board));
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

/// `cargo args...` in the QEMU board's folder (its `.cargo/config.toml` names the target).
fn firmware_cargo(ctx: &Ctx, args: &[&str]) -> Command {
    let mut command = ctx.cargo(args);
    command
        .current_dir(ctx.root.join(QEMU_BOARD))
        .env("CARGO_TARGET_DIR", firmware_target_dir(ctx));
    command
}

/// The `firmware` suite: formatting, clippy (with and without flash persistence) and
/// release builds of the QEMU, NUCLEO-H743ZI and ESP32-C3 firmware.
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
    ] {
        result.check(ctx.run(&mut firmware_cargo(ctx, &args)));
    }
    result.check(build_qemu_firmware(ctx, &[]).map(|_| ()));
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

    #[test]
    fn port_defaults_and_parses() {
        assert_eq!(parse_port(&[]), Ok(DEFAULT_MQTT_PORT));
        let args = ["--mqtt-port".to_owned(), "18830".to_owned()];
        assert_eq!(parse_port(&args), Ok(18830));
        assert!(parse_port(&["--mqtt-port".to_owned()]).is_err());
        assert!(parse_port(&["--mqtt-port".to_owned(), "x".to_owned()]).is_err());
        assert!(parse_port(&["--port".to_owned(), "1".to_owned()]).is_err());
    }

    #[test]
    fn qemu_forwards_only_the_mqtt_port_on_loopback() {
        let args = qemu_args(Path::new("/fw.elf"), 18830).join(" ");
        assert!(args.contains("-machine mps2-an386"), "{args}");
        assert!(
            args.contains("restrict=on,hostfwd=tcp:127.0.0.1:18830-:1883"),
            "{args}"
        );
        assert!(args.ends_with("-kernel /fw.elf"), "{args}");
    }
}
