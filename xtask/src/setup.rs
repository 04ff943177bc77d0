//! Installers: make sure the toolchains, targets and tools the suites need are present.
//!
//! Each check says what it found, and each install says what it installs, so a CI log
//! explains any time spent here. Whatever cannot be installed is an error with the command to
//! run by hand: a check that silently skips itself because its tool is missing is a check
//! that never runs.

use crate::exec::Ctx;
use crate::report::SuiteResult;

/// The embedded targets the `nostd` suite builds `fulmar-core` for: a Cortex-M4F (the QEMU
/// board and common STM32 parts) and a RISC-V core without atomics (ESP32-C3-class), which
/// keeps the core honest about what it asks of the platform.
pub(crate) const EMBEDDED_TARGETS: [&str; 2] =
    ["thumbv7em-none-eabihf", "riscv32imc-unknown-none-elf"];

/// rustup components the `fmt` and `clippy` suites need.
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// The `setup` suite: everything the other suites of `cargo xtask test` need.
pub(crate) fn suite(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    let mut installed = Vec::new();
    // Stop at the first failure: each step needs the ones before it (targets need rustup,
    // cargo-fuzz needs nightly).
    result.check(ensure_all(ctx, &mut installed));
    result.note = if installed.is_empty() {
        "nothing to install".to_owned()
    } else {
        format!("installed: {}", installed.join(", "))
    };
    result
}

fn ensure_all(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    ensure_rustup(ctx)?;
    ensure_components(ctx, &COMPONENTS, installed)?;
    ensure_targets(ctx, &EMBEDDED_TARGETS, installed)?;
    ensure_nightly(ctx, installed)?;
    ensure_cargo_fuzz(ctx, installed)?;
    ensure_cxx(ctx, installed)?;
    ensure_mosquitto_clients(ctx, installed)?;
    ensure_mosquitto_passwd(ctx, installed)?;
    ensure_paho(ctx, installed)?;
    ensure_systemd_analyze(ctx, installed)?;
    // QEMU and defmt-print for the firmware's end-to-end tests and `cargo xtask qemu`.
    crate::firmware::ensure_tools(ctx, installed)?;
    // Show the toolchains in the log: "works on my machine" usually means "different rustc".
    for args in [&["--version"][..], &["+nightly", "--version"]] {
        ctx.run(&mut ctx.command("rustc", args))?;
    }
    Ok(())
}

fn ensure_rustup(ctx: &Ctx) -> Result<(), String> {
    let probe = ctx.probe(&mut ctx.command("rustup", ["--version"]));
    match probe {
        Ok(probe) if probe.success => Ok(()),
        _ => Err(
            "rustup is needed to install toolchains, targets and components; install it \
                  from https://rustup.rs:\n  curl --proto '=https' --tlsv1.2 -sSf \
                  https://sh.rustup.rs | sh"
                .to_owned(),
        ),
    }
}

/// rustup components of the toolchain `cargo` resolves to in the workspace root (rustup
/// passes its choice on to us in `RUSTUP_TOOLCHAIN`, so children use the same one).
pub(crate) fn ensure_components(
    ctx: &Ctx,
    wanted: &[&str],
    installed: &mut Vec<String>,
) -> Result<(), String> {
    let list = probe_ok(ctx, &["component", "list", "--installed"])?;
    // Lines look like `clippy-x86_64-unknown-linux-gnu`.
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|name| {
            !list
                .lines()
                .any(|line| line == *name || line.starts_with(&format!("{name}-")))
        })
        .collect();
    report_present(wanted, &missing, "rustup component");
    if !missing.is_empty() {
        println!(
            "setup: installing rustup components: {}",
            missing.join(", ")
        );
        ctx.run(&mut ctx.command("rustup", [&["component", "add"][..], &missing[..]].concat()))?;
        installed.extend(missing.iter().map(|m| m.to_string()));
    }
    Ok(())
}

pub(crate) fn ensure_targets(
    ctx: &Ctx,
    wanted: &[&str],
    installed: &mut Vec<String>,
) -> Result<(), String> {
    let list = probe_ok(ctx, &["target", "list", "--installed"])?;
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|name| !list.lines().any(|line| line.trim() == *name))
        .collect();
    report_present(wanted, &missing, "rustup target");
    if !missing.is_empty() {
        println!("setup: installing rustup targets: {}", missing.join(", "));
        ctx.run(&mut ctx.command("rustup", [&["target", "add"][..], &missing[..]].concat()))?;
        installed.extend(missing.iter().map(|m| m.to_string()));
    }
    Ok(())
}

/// A nightly toolchain, which cargo-fuzz needs for the sanitizer flags it passes to rustc.
fn ensure_nightly(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    let list = probe_ok(ctx, &["toolchain", "list"])?;
    // Lines look like `nightly-x86_64-unknown-linux-gnu (default)`.
    let present = list.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or("");
        name == "nightly" || name.starts_with("nightly-")
    });
    if present {
        println!("setup: nightly toolchain: present");
        return Ok(());
    }
    println!("setup: installing the nightly toolchain (minimal profile), for cargo-fuzz");
    ctx.run(&mut ctx.command(
        "rustup",
        ["toolchain", "install", "nightly", "--profile", "minimal"],
    ))?;
    installed.push("nightly toolchain".to_owned());
    Ok(())
}

fn ensure_cargo_fuzz(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    let version = ["+nightly", "fuzz", "--version"];
    if ctx.probe(&mut ctx.command("cargo", version))?.success {
        println!("setup: cargo-fuzz: present");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    ctx.run(&mut ctx.command("cargo", ["install", "cargo-fuzz", "--locked"]))?;
    // Installed but not found means cargo's bin directory is not on PATH; say so here
    // rather than let the fuzz suite fail with "no such command".
    if !ctx.probe(&mut ctx.command("cargo", version))?.success {
        return Err(
            "cargo-fuzz was installed but `cargo +nightly fuzz --version` still fails; \
                    is ~/.cargo/bin on PATH?"
                .to_owned(),
        );
    }
    installed.push("cargo-fuzz".to_owned());
    Ok(())
}

/// A C++ compiler: libfuzzer-sys compiles libFuzzer from C++ source when the fuzz targets
/// build, and the `cc` crate looks for `$CXX`, else `c++`.
fn ensure_cxx(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    if matches!(ctx.probe(&mut ctx.command(&cxx, ["--version"])), Ok(p) if p.success) {
        println!("setup: C++ compiler ({cxx}): present");
        return Ok(());
    }
    if !matches!(ctx.probe(&mut ctx.command("dpkg", ["--version"])), Ok(p) if p.success) {
        return Err(format!(
            "no C++ compiler (`{cxx} --version` fails) and this is not a Debian system; \
             install g++ or clang++ (libFuzzer is built from C++ for the fuzz suite)"
        ));
    }
    installed.extend(ensure_debian_packages(ctx, &["g++"])?);
    Ok(())
}

/// `mosquitto_pub` and `mosquitto_sub`, the reference MQTT clients the end-to-end tests in
/// `tests/` drive the `fulmar` binary with (Debian package `mosquitto-clients`).
fn ensure_mosquitto_clients(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    // `--help` exits 1 on these tools; that they start at all is what counts.
    let present = ["mosquitto_pub", "mosquitto_sub"]
        .iter()
        .all(|tool| ctx.probe(&mut ctx.command(tool, ["--help"])).is_ok());
    if present {
        println!("setup: mosquitto_pub and mosquitto_sub: present");
        return Ok(());
    }
    if !matches!(ctx.probe(&mut ctx.command("dpkg", ["--version"])), Ok(p) if p.success) {
        return Err(
            "mosquitto_pub/mosquitto_sub not found and this is not a Debian system; install \
             the Mosquitto command-line clients (the end-to-end tests use them)"
                .to_owned(),
        );
    }
    installed.extend(ensure_debian_packages(ctx, &["mosquitto-clients"])?);
    Ok(())
}

/// `systemd-analyze`, with which `tests/tests/edge_config.rs` checks the shipped systemd
/// unit (`edge-linux/dist/fulmar.service`); Debian package `systemd`.
fn ensure_systemd_analyze(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    if matches!(ctx.probe(&mut ctx.command("systemd-analyze", ["--version"])), Ok(p) if p.success) {
        println!("setup: systemd-analyze: present");
        return Ok(());
    }
    installed.extend(ensure_debian_packages(ctx, &["systemd"])?);
    Ok(())
}

/// `mosquitto_passwd` and the `mosquitto` broker (Debian package `mosquitto`): the
/// authentication tests check that password files pass both ways between Mosquitto and
/// fulmar, and the bridge tests (`edge_bridge`, `firmware_bridge`) bridge to Mosquitto.
fn ensure_mosquitto_passwd(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    // Neither has a version flag that exits 0; that they start is what counts.
    let present = ["mosquitto_passwd", "mosquitto"]
        .iter()
        .all(|tool| ctx.probe(&mut ctx.command(tool, ["--help"])).is_ok());
    if present {
        println!("setup: mosquitto_passwd and mosquitto: present");
        return Ok(());
    }
    installed.extend(ensure_debian_packages(ctx, &["mosquitto"])?);
    Ok(())
}

/// Where the Python client tests find paho-mqtt: a virtual environment (tests/src/paho.rs
/// looks in the same place, unless `FULMAR_PYTHON` says otherwise).
const PAHO_VENV: &str = ".cache/fulmar/venv";

/// The Python MQTT client `paho-mqtt` in a virtual environment at `~/.cache/fulmar/venv`
/// (Debian's Python refuses `pip install` outside one).
fn ensure_paho(ctx: &Ctx, installed: &mut Vec<String>) -> Result<(), String> {
    let home = std::env::var("HOME").map_err(|_| "HOME is not set; cannot place the venv")?;
    let venv = format!("{home}/{PAHO_VENV}");
    let python = format!("{venv}/bin/python");
    let has_paho = |ctx: &Ctx| {
        matches!(
            ctx.probe(&mut ctx.command(&python, ["-c", "import paho.mqtt.client"])),
            Ok(p) if p.success
        )
    };
    if has_paho(ctx) {
        println!("setup: paho-mqtt in {venv}: present");
        return Ok(());
    }
    println!("setup: installing paho-mqtt into a virtual environment at {venv}");
    let make = |ctx: &Ctx| ctx.run(&mut ctx.command("python3", ["-m", "venv", &venv]));
    if make(ctx).is_err() {
        // Debian ships venv (and ensurepip) separately from python3.
        installed.extend(ensure_debian_packages(ctx, &["python3", "python3-venv"])?);
        make(ctx)?;
    }
    let pip = format!("{venv}/bin/pip");
    ctx.run(&mut ctx.command(&pip, ["install", "--quiet", "paho-mqtt>=2,<3"]))?;
    if !has_paho(ctx) {
        return Err(format!(
            "paho-mqtt was installed but `{python} -c 'import paho.mqtt.client'` fails"
        ));
    }
    installed.push("paho-mqtt (venv)".to_owned());
    Ok(())
}

/// Makes sure the Debian packages `packages` are installed, installing the missing ones with
/// apt-get when running as root (with one `apt-get update` per run first, since a fresh
/// container has no package lists). Not root: fails with the exact command to run.
/// Returns the packages it installed.
pub(crate) fn ensure_debian_packages(ctx: &Ctx, packages: &[&str]) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    for package in packages {
        let probe = ctx.probe(&mut ctx.command("dpkg", ["-s", package]))?;
        // `dpkg -s` also succeeds for removed packages whose config files remain; only
        // this status means the package is really there.
        let present = probe.success
            && probe
                .stdout
                .lines()
                .any(|line| line.trim() == "Status: install ok installed");
        if !present {
            missing.push(*package);
        }
    }
    report_present(packages, &missing, "Debian package");
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let install = [&["install", "-y"][..], &missing[..]].concat();
    if !is_root(ctx)? {
        return Err(format!(
            "missing Debian packages: {0}; install them with:\n  sudo apt-get update && sudo \
             apt-get install -y {0}",
            missing.join(" ")
        ));
    }
    println!("setup: installing Debian packages: {}", missing.join(", "));
    if !ctx.apt_updated.get() {
        ctx.run(&mut apt_get(ctx, &["update"]))?;
        ctx.apt_updated.set(true);
    }
    ctx.run(&mut apt_get(ctx, &install))?;
    Ok(missing.iter().map(|p| p.to_string()).collect())
}

fn apt_get(ctx: &Ctx, args: &[&str]) -> std::process::Command {
    let mut command = ctx.command("apt-get", args);
    // Without this, a package that asks a question (tzdata, say) waits forever for an answer
    // in CI.
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn is_root(ctx: &Ctx) -> Result<bool, String> {
    let probe = ctx.probe(&mut ctx.command("id", ["-u"]))?;
    if !probe.success {
        return Err("`id -u` failed; cannot tell whether we may run apt-get".to_owned());
    }
    Ok(probe.stdout.trim() == "0")
}

/// Runs `rustup args...` quietly and returns its stdout, or fails with the command.
fn probe_ok(ctx: &Ctx, args: &[&str]) -> Result<String, String> {
    let probe = ctx.probe(&mut ctx.command("rustup", args))?;
    if probe.success {
        Ok(probe.stdout)
    } else {
        Err(format!("`rustup {}` failed", args.join(" ")))
    }
}

fn report_present(wanted: &[&str], missing: &[&str], kind: &str) {
    for name in wanted.iter().filter(|name| !missing.contains(name)) {
        println!("setup: {kind} {name}: present");
    }
}
