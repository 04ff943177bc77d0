//! `cargo xtask dist`: static release binaries of `fulmar` for ARM gateways, and the
//! `cross` suite of `cargo xtask test` that runs them under QEMU.
//!
//! Targets:
//! - `aarch64-unknown-linux-musl`: 64-bit Raspberry Pi OS, any arm64 Linux. musl links
//!   statically by default.
//! - `armv7-unknown-linux-gnueabihf` with `+crt-static`: 32-bit Raspberry Pi OS (Pi 2
//!   and later), glibc linked statically.
//!
//! Each is linked by the Debian cross compiler of its architecture (`gcc-aarch64-linux-gnu`,
//! `gcc-arm-linux-gnueabihf`), which also compiles C dependencies such as `ring`; the
//! `cc` crate is pointed at it with `CC_<target>`. The binaries are stripped (release
//! profile, no debug info) and copied to `<target dir>/dist/fulmar-<target>`; each is checked
//! to be an ELF file of the right machine without a program interpreter (static).
//!
//! The `cross` suite builds both, starts each under `qemu-aarch64` / `qemu-arm` (Debian
//! `qemu-user`) on a free loopback port, and does a QoS 1 publish/subscribe round trip
//! through it with `mosquitto_sub` and `mosquitto_pub` running on the host.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::USAGE_ERROR;
use crate::exec::Ctx;
use crate::report::SuiteResult;
use crate::setup;

/// One cross target and what building for it needs.
#[derive(Debug, Clone, Copy)]
struct Target {
    triple: &'static str,
    /// The Debian package with the cross gcc, and the gcc's name.
    gcc_package: &'static str,
    gcc: &'static str,
    /// Extra rustc flags for this target.
    rustflags: &'static str,
    /// The ELF `e_machine` the binary must have.
    machine: u16,
    /// The QEMU user-mode emulator that runs it.
    qemu: &'static str,
}

const TARGETS: [Target; 2] = [
    Target {
        triple: "aarch64-unknown-linux-musl",
        gcc_package: "gcc-aarch64-linux-gnu",
        gcc: "aarch64-linux-gnu-gcc",
        rustflags: "",
        machine: 183, // EM_AARCH64
        qemu: "qemu-aarch64",
    },
    Target {
        triple: "armv7-unknown-linux-gnueabihf",
        gcc_package: "gcc-arm-linux-gnueabihf",
        gcc: "arm-linux-gnueabihf-gcc",
        rustflags: "-C target-feature=+crt-static",
        machine: 40, // EM_ARM
        qemu: "qemu-arm",
    },
];

/// How long a broker under QEMU gets to start, and a message to make the round trip.
const QEMU_TIMEOUT: Duration = Duration::from_secs(30);

/// `cargo xtask dist`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    let targets: Vec<Target> = if args.is_empty() {
        TARGETS.to_vec()
    } else {
        match args
            .iter()
            .map(|a| TARGETS.into_iter().find(|t| t.triple == a).ok_or(a))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(targets) => targets,
            Err(unknown) => {
                eprintln!("error: unknown target `{unknown}`\n");
                eprint!("{}", help());
                return ExitCode::from(USAGE_ERROR);
            }
        }
    };
    crate::exec::with_ctx(|ctx| {
        let mut installed = Vec::new();
        for target in targets {
            let binary = build(ctx, target, &mut installed)?;
            println!("dist: {}", binary.display());
        }
        Ok(())
    })
}

/// The text of `cargo xtask help dist`.
pub(crate) fn help() -> String {
    let mut text = String::from(
        "usage: cargo xtask dist [TARGET...]\n\n\
         Builds static release binaries of `fulmar` into <target dir>/dist/fulmar-<TARGET>,\n\
         installing the rustup targets and the Debian cross compilers when missing.\n\ntargets:\n",
    );
    for target in TARGETS {
        text.push_str(&format!(
            "  {}  (linked by {}{})\n",
            target.triple,
            target.gcc,
            if target.rustflags.is_empty() {
                String::new()
            } else {
                format!(", {}", target.rustflags)
            }
        ));
    }
    text
}

/// Builds `fulmar` for `target`, copies it to the dist directory, checks that it is a
/// static binary for the right machine, and returns its path.
fn build(ctx: &Ctx, target: Target, installed: &mut Vec<String>) -> Result<PathBuf, String> {
    setup::ensure_targets(ctx, &[target.triple], installed)?;
    installed.extend(setup::ensure_debian_packages(ctx, &[target.gcc_package])?);
    let env_name = target.triple.replace('-', "_");
    let mut command = ctx.cargo([
        "build",
        "--release",
        "-p",
        "fulmar-edge",
        "--bin",
        "fulmar",
        "--target",
        target.triple,
    ]);
    command
        .env(
            format!("CARGO_TARGET_{}_LINKER", env_name.to_uppercase()),
            target.gcc,
        )
        .env(format!("CC_{env_name}"), target.gcc)
        // A gateway has no use for debug info; stripping makes the binary a few times
        // smaller. Host artifacts keep the workspace profile (cargo hashes the profile in).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    if !target.rustflags.is_empty() {
        command.env(
            format!("CARGO_TARGET_{}_RUSTFLAGS", env_name.to_uppercase()),
            target.rustflags,
        );
    }
    ctx.run(&mut command)?;
    let built = ctx
        .target_dir
        .join(target.triple)
        .join("release")
        .join("fulmar");
    let dist = ctx.target_dir.join("dist");
    fs::create_dir_all(&dist).map_err(|e| format!("cannot create {}: {e}", dist.display()))?;
    let out = dist.join(format!("fulmar-{}", target.triple));
    fs::copy(&built, &out)
        .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), out.display()))?;
    let bytes = fs::read(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
    let elf = Elf::parse(&bytes).ok_or_else(|| format!("{} is not an ELF file", out.display()))?;
    if elf.machine != target.machine {
        return Err(format!(
            "{} is for ELF machine {}, expected {}",
            out.display(),
            elf.machine,
            target.machine
        ));
    }
    if elf.has_interpreter {
        return Err(format!(
            "{} asks for a dynamic loader (PT_INTERP): it is not static",
            out.display()
        ));
    }
    println!(
        "dist: {}: static, {:.1} MiB",
        target.triple,
        bytes.len() as f64 / (1024.0 * 1024.0)
    );
    Ok(out)
}

/// What the cross checks read from an ELF header.
#[derive(Debug, PartialEq, Eq)]
struct Elf {
    machine: u16,
    /// Whether a PT_INTERP program header names a dynamic loader.
    has_interpreter: bool,
}

impl Elf {
    /// Reads the header and program headers of a 32- or 64-bit little-endian ELF file.
    fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.get(0..4)? != b"\x7fELF" || *bytes.get(5)? != 1 {
            return None;
        }
        let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        let (phoff, phentsize, phnum) = match *bytes.get(4)? {
            1 => (u64::from(u32_at(0x1C)?), u16_at(0x2A)?, u16_at(0x2C)?),
            2 => (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?),
            _ => return None,
        };
        const PT_INTERP: u32 = 3;
        let mut has_interpreter = false;
        for i in 0..u64::from(phnum) {
            let at = usize::try_from(phoff + i * u64::from(phentsize)).ok()?;
            has_interpreter |= u32_at(at)? == PT_INTERP;
        }
        Some(Self {
            machine: u16_at(0x12)?,
            has_interpreter,
        })
    }
}

/// The `cross` suite: build both targets and make a round trip through each under QEMU.
pub(crate) fn suite(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    let mut installed = Vec::new();
    let mut passed = 0;
    for target in TARGETS {
        let checked = build(ctx, target, &mut installed).and_then(|binary| {
            installed.extend(setup::ensure_debian_packages(ctx, &["qemu-user"])?);
            round_trip(target, &binary, &ctx.target_dir.join("cross-data"))
        });
        match checked {
            Ok(()) => passed += 1,
            Err(e) => result.fail(format!("{}: {e}", target.triple)),
        }
    }
    result.passed = Some(passed);
    result.failed = Some(TARGETS.len() as u64 - passed);
    result.note = "targets built static and round-tripped under QEMU".to_owned();
    if !installed.is_empty() {
        result
            .note
            .push_str(&format!("; installed: {}", installed.join(", ")));
    }
    result
}

/// Starts `binary` under QEMU and sends one QoS 1 message through it from the host's
/// `mosquitto_pub` to its `mosquitto_sub`. The broker keeps its (persistent) state in a
/// fresh directory under `data_root`, so the embedded store runs on the target too and
/// nothing is written into the clone.
fn round_trip(target: Target, binary: &Path, data_root: &Path) -> Result<(), String> {
    let data = data_root.join(target.triple);
    let _ = fs::remove_dir_all(&data);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    let port_arg = port.to_string();
    println!(
        "cross: {} {} on 127.0.0.1:{port}",
        target.qemu,
        binary.display()
    );
    let broker = Command::new(target.qemu)
        .arg(binary)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "info"])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", target.qemu))?;
    let mut broker = Killed(broker);
    let deadline = Instant::now() + QEMU_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = broker.0.try_wait() {
            return Err(format!(
                "the broker under {} exited ({status})",
                target.qemu
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("the broker did not listen within {QEMU_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let topic = format!("cross/{}", target.triple);
    let message = format!("hello from the host via {}", target.qemu);
    let mut subscriber = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port_arg, "-q", "1", "-C", "1"])
        .args(["-t", &topic])
        .args(["-W", &QEMU_TIMEOUT.as_secs().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start mosquitto_sub: {e}"))?;
    let stdout = subscriber.stdout.take().ok_or("mosquitto_sub: no stdout")?;
    let mut subscriber = Killed(subscriber);
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // mosquitto_sub prints nothing when its SUBACK arrives, so publish until the message
    // comes through: a message published before the subscription exists is not delivered.
    let deadline = Instant::now() + QEMU_TIMEOUT;
    loop {
        let published = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port_arg, "-q", "1"])
            .args(["-t", &topic, "-m", &message])
            .status()
            .map_err(|e| format!("cannot run mosquitto_pub: {e}"))?;
        if !published.success() {
            return Err(format!("mosquitto_pub failed ({published})"));
        }
        match received.recv_timeout(Duration::from_millis(500)) {
            Ok(line) if line == message => break,
            Ok(line) => {
                return Err(format!(
                    "mosquitto_sub printed {line:?}, expected {message:?}"
                ));
            }
            Err(_) if Instant::now() > deadline => {
                return Err(format!(
                    "no message through the broker within {QEMU_TIMEOUT:?}"
                ));
            }
            Err(_) => {}
        }
    }
    let _ = subscriber.0.wait();
    broker.stop();
    println!(
        "cross: {}: round trip through the emulated broker OK",
        target.triple
    );
    Ok(())
}

/// A child process that is killed when dropped, so a failed check leaves nothing running.
#[derive(Debug)]
struct Killed(Child);

impl Killed {
    /// SIGTERM, then a short wait, then SIGKILL.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit ELF header with `phnum` program headers of the given types.
    fn elf64(machine: u16, types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0; 64 + 56 * types.len()];
        bytes[0..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3A].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            bytes[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn elf_headers_tell_static_from_dynamic() {
        assert_eq!(
            Elf::parse(&elf64(183, &[6, 1, 1])),
            Some(Elf {
                machine: 183,
                has_interpreter: false
            })
        );
        assert_eq!(
            Elf::parse(&elf64(40, &[6, 3, 1])).map(|e| e.has_interpreter),
            Some(true)
        );
        assert_eq!(Elf::parse(b"#!/bin/sh\n"), None);
        // Program headers that run past the end of the file are not an ELF we can judge.
        let mut truncated = elf64(183, &[1, 1]);
        truncated.truncate(80);
        assert_eq!(Elf::parse(&truncated), None);
    }

    #[test]
    fn this_xtask_binary_parses_as_the_host_machine() {
        let exe = std::env::current_exe().unwrap();
        let elf = Elf::parse(&fs::read(exe).unwrap()).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(elf.machine, 62);
        }
    }
}
