//! `cargo xtask size`: how much flash and static RAM the firmware broker takes.
//!
//! It builds `core/size-probe` (a minimal `#![no_std]` firmware around a `static` broker
//! for 8 clients, 64 subscriptions, 32 retained messages and 2 KiB packets; its crate docs
//! list every capacity) for a Cortex-M4F in release mode (`opt-level = "z"`, LTO, one
//! codegen unit, `panic = "abort"`), reads its sections with `llvm-size` from rustup's
//! `llvm-tools` component, and compares them with the goals:
//! - flash: `.vector_table` + `.text` + `.rodata` (llvm-size's "text") plus the `.data`
//!   image copied to RAM at boot, at most [`FLASH_GOAL`];
//! - static RAM: `.data` + `.bss`, at most [`RAM_GOAL`]. The stack comes on top of this.
//!
//! Boards are built as every firmware build of xtask is, with source paths relative to the
//! repository and the registry (`trim_paths`), so the flash figures do not depend on where
//! the checkout and `$CARGO_HOME` are.
//!
//! The `size` suite of `cargo xtask test` runs the same measurement and fails when a goal
//! is exceeded, so a change that makes the firmware broker outgrow its budget fails CI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::USAGE_ERROR;
use crate::exec::Ctx;
use crate::report::SuiteResult;
use crate::setup;

/// The target the probe is built for: a Cortex-M4F, like the QEMU board and common STM32s.
const TARGET: &str = "thumbv7em-none-eabihf";
/// Flash budget of the firmware broker: 64 KiB.
const FLASH_GOAL: u64 = 64 * 1024;
/// Static RAM budget of the firmware broker: 40 KiB.
const RAM_GOAL: u64 = 40 * 1024;
/// Most initialised static data the probe may have: the broker is built by the compiler
/// as all zero bytes (`Broker::unconfigured`) so it lands in `.bss`; a non-zero byte in
/// it would move all of it to `.data` and put a copy of it in flash.
const DATA_LIMIT: u64 = 1024;
/// Flash budget of a board's whole firmware (broker, embassy-net, drivers): 96 KiB,
/// enforced on the broker-only builds of the QEMU board and the NUCLEO-H743ZI.
const FIRMWARE_FLASH_GOAL: u64 = 96 * 1024;
/// Static RAM goal of a board's whole firmware: 48 KiB, enforced on the broker-only builds
/// of the QEMU board and the NUCLEO-H743ZI (README, "Size", says what takes it).
const FIRMWARE_RAM_GOAL: u64 = 48 * 1024;
/// How many of the largest statics to list under the table.
const LARGEST: usize = 5;

/// `cargo xtask size`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    if let Some(arg) = args.first() {
        eprintln!("error: `size` takes no arguments, got `{arg}`\n");
        eprint!("{}", help());
        return ExitCode::from(USAGE_ERROR);
    }
    let ctx = match Ctx::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = suite(&ctx);
    if result.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The text of `cargo xtask help size`.
pub(crate) fn help() -> String {
    format!(
        "usage: cargo xtask size\n\n\
         Builds core/size-probe, a minimal no_std firmware around a static fulmar-core broker\n\
         (8 clients, 64 subscriptions, 32 retained messages, 2 KiB packets), for {TARGET}\n\
         in release mode, and prints its flash (text + rodata + data) and static RAM\n\
         (data + bss) as llvm-size measures them, against the goals of {} KiB flash and\n\
         {} KiB RAM. Then builds the whole firmware of each board (edge-firmware/qemu-mps2,\n\
         stm32-h743, esp32c3) and prints the same against {} KiB flash and {} KiB RAM (both\n\
         enforced on the broker-only builds of the QEMU board and the NUCLEO-H743ZI; reported\n\
         for the others). Installs\n\
         the rustup component llvm-tools and the target when missing.\n\
         Exits 1 when an enforced goal is exceeded.\n",
        FLASH_GOAL / 1024,
        RAM_GOAL / 1024,
        FIRMWARE_FLASH_GOAL / 1024,
        FIRMWARE_RAM_GOAL / 1024
    )
}

/// The `size` suite of `cargo xtask test`: the same measurement, failing over budget.
pub(crate) fn suite(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    let mut installed = Vec::new();
    let mut notes = Vec::new();
    match measure(ctx, &mut installed) {
        Ok(report) => {
            print!("{}", report.render());
            notes.push(format!(
                "probe flash {} B, RAM {} B",
                report.flash(),
                report.ram()
            ));
            if report.flash() > FLASH_GOAL {
                result.fail(format!(
                    "firmware flash is {} bytes, over the goal of {FLASH_GOAL}",
                    report.flash()
                ));
            }
            if report.sections.data > DATA_LIMIT {
                result.fail(format!(
                    "firmware .data is {} bytes, over {DATA_LIMIT}: has the static broker \
                     stopped being all zero bytes (Broker::unconfigured)?",
                    report.sections.data
                ));
            }
            if report.ram() > RAM_GOAL {
                result.fail(format!(
                    "firmware static RAM is {} bytes, over the goal of {RAM_GOAL}",
                    report.ram()
                ));
            }
        }
        Err(e) => result.fail(e),
    }
    // The QEMU board's broker firmware (held to both goals), then its default build with
    // flash persistence and the uplink (reported). The default build comes last, so it is
    // what stays built. Then the NUCLEO-H743ZI broker firmware (held to both goals), its
    // build with flash persistence (reported), and the ESP32-C3's (reported: its Wi-Fi
    // driver alone is most of its flash).
    let builds: [(&str, BuildFn, Enforced); 5] = [
        (
            "QEMU board firmware, broker only (edge-firmware/qemu-mps2, thumbv7em-none-eabihf)",
            |ctx| crate::firmware::build_qemu_firmware(ctx, &["--no-default-features"]),
            Enforced::BOTH,
        ),
        (
            "QEMU board firmware, with flash persistence and the uplink \
             (edge-firmware/qemu-mps2, thumbv7em-none-eabihf)",
            |ctx| crate::firmware::build_qemu_firmware(ctx, &[]),
            Enforced::NONE,
        ),
        (
            "NUCLEO-H743ZI firmware, broker only (edge-firmware/stm32-h743, thumbv7em-none-eabihf)",
            crate::firmware::build_stm32_firmware,
            Enforced::BOTH,
        ),
        (
            "NUCLEO-H743ZI firmware, with flash persistence (edge-firmware/stm32-h743, \
             thumbv7em-none-eabihf)",
            crate::firmware::build_stm32_persistence_firmware,
            Enforced::NONE,
        ),
        (
            "ESP32-C3 firmware (edge-firmware/esp32c3, riscv32imc-unknown-none-elf)",
            crate::firmware::build_esp32c3_firmware,
            Enforced::NONE,
        ),
    ];
    for (what, build, enforced) in builds {
        let firmware = build(ctx).and_then(|elf| {
            let mut report = measure_elf(ctx, &elf)?;
            report.title = what.to_owned();
            report.flash_goal = FIRMWARE_FLASH_GOAL;
            report.ram_goal = FIRMWARE_RAM_GOAL;
            Ok(report)
        });
        match firmware {
            Ok(report) => {
                print!("{}", report.render());
                println!("({}: see README)", enforced.describe());
                notes.push(format!(
                    "{what}: flash {} B, RAM {} B",
                    report.flash(),
                    report.ram()
                ));
                if enforced.flash && report.flash() > FIRMWARE_FLASH_GOAL {
                    result.fail(format!(
                        "{what}: flash is {} bytes, over the goal of {FIRMWARE_FLASH_GOAL}",
                        report.flash()
                    ));
                }
                if enforced.ram && report.ram() > FIRMWARE_RAM_GOAL {
                    result.fail(format!(
                        "{what}: static RAM is {} bytes, over the goal of {FIRMWARE_RAM_GOAL}",
                        report.ram()
                    ));
                }
            }
            Err(e) => result.fail(e),
        }
    }
    if !installed.is_empty() {
        notes.push(format!("installed: {}", installed.join(", ")));
    }
    result.note = notes.join("; ");
    result
}

/// Builds a board's firmware and returns its ELF.
type BuildFn = fn(&Ctx) -> Result<PathBuf, String>;

/// Which of a board's goals CI holds its firmware to.
struct Enforced {
    flash: bool,
    ram: bool,
    /// What is said of the goals: why one is not enforced.
    why: &'static str,
}

impl Enforced {
    const BOTH: Self = Self {
        flash: true,
        ram: true,
        why: "",
    };
    const NONE: Self = Self {
        flash: false,
        ram: false,
        why: "flash and RAM goals reported, not enforced",
    };

    fn describe(&self) -> String {
        match (self.flash, self.ram) {
            (true, true) => "flash and RAM goals enforced".to_owned(),
            (true, false) => format!("flash goal enforced; {}", self.why),
            (false, true) => format!("RAM goal enforced; {}", self.why),
            (false, false) => self.why.to_owned(),
        }
    }
}

/// Sections and largest statics of a built firmware, and its goals.
#[derive(Debug)]
struct Report {
    /// What was measured.
    title: String,
    flash_goal: u64,
    ram_goal: u64,
    sections: Berkeley,
    /// The largest symbols in RAM, largest first: (bytes, name).
    largest: Vec<(u64, String)>,
}

impl Report {
    fn flash(&self) -> u64 {
        self.sections.text + self.sections.data
    }

    fn ram(&self) -> u64 {
        self.sections.data + self.sections.bss
    }

    #[cfg(test)]
    fn within_goals(&self) -> bool {
        self.flash() <= self.flash_goal && self.ram() <= self.ram_goal
    }

    fn render(&self) -> String {
        let verdict = |used: u64, goal: u64| if used <= goal { "PASS" } else { "OVER" };
        let percent = |used: u64, goal: u64| format!("{}%", used * 100 / goal);
        let rows = [
            [
                "flash".to_owned(),
                self.flash().to_string(),
                self.flash_goal.to_string(),
                percent(self.flash(), self.flash_goal),
                verdict(self.flash(), self.flash_goal).to_owned(),
            ],
            [
                "RAM".to_owned(),
                self.ram().to_string(),
                self.ram_goal.to_string(),
                percent(self.ram(), self.ram_goal),
                verdict(self.ram(), self.ram_goal).to_owned(),
            ],
        ];
        let header = ["region", "bytes", "goal", "used", "result"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let line = |cells: [&str; 5]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (cell, w))| match i {
                    1..=3 => format!("{cell:>w$}"),
                    _ => format!("{cell:<w$}"),
                })
                .collect();
            format!("{}\n", padded.join(" | ").trim_end())
        };
        let mut out = format!("\n{}:\n\n", self.title);
        out.push_str(&line(header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("{}\n", rule.join("-+-")));
        for row in &rows {
            out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
        }
        let s = &self.sections;
        out.push_str(&format!(
            "\nflash = text {} (.vector_table, .text, .rodata) + data {}\n\
             RAM   = data {} + bss {} (static only; the stack comes on top)\n",
            s.text, s.data, s.data, s.bss
        ));
        if !self.largest.is_empty() {
            out.push_str("\nlargest statics in RAM:\n");
            for (bytes, name) in &self.largest {
                out.push_str(&format!("  {bytes:>7}  {name}\n"));
            }
        }
        out
    }
}

/// llvm-size's Berkeley totals, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Berkeley {
    /// Everything read-only and allocated: vector table, code, constants.
    text: u64,
    /// Initialised statics: in RAM, with their initial image in flash.
    data: u64,
    /// Zero-initialised statics: in RAM only.
    bss: u64,
}

/// Builds the probe and measures it.
fn measure(ctx: &Ctx, installed: &mut Vec<String>) -> Result<Report, String> {
    setup::ensure_targets(ctx, &[TARGET], installed)?;
    setup::ensure_components(ctx, &["llvm-tools"], installed)?;
    for item in installed.iter() {
        println!("size: installed {item}");
    }
    let probe = ctx.root.join("core").join("size-probe");
    let target_dir = ctx.target_dir.join("size-probe");
    let mut build = ctx.cargo(["build", "--release", "--target", TARGET, "--manifest-path"]);
    build
        .arg(probe.join("Cargo.toml"))
        // Its own directory: the probe is its own workspace with its own release profile.
        .env("CARGO_TARGET_DIR", &target_dir);
    ctx.run(&mut build)?;
    let elf = target_dir
        .join(TARGET)
        .join("release")
        .join("fulmar-size-probe");
    measure_elf(ctx, &elf)
}

/// llvm-size and llvm-nm on `elf`, against the probe's goals.
fn measure_elf(ctx: &Ctx, elf: &Path) -> Result<Report, String> {
    let bin = llvm_tools_bin(ctx)?;
    let tool = |name: &str| bin.join(name).to_string_lossy().into_owned();
    let size = ctx.probe(ctx.command(&tool("llvm-size"), ["-B", "-d"]).arg(elf))?;
    if !size.success {
        return Err(format!("llvm-size failed on {}", elf.display()));
    }
    let sections = parse_berkeley(&size.stdout)?;
    let nm_args = ["--print-size", "--size-sort", "--radix=d", "-C"];
    let nm = ctx.probe(ctx.command(&tool("llvm-nm"), nm_args).arg(elf))?;
    let largest = if nm.success {
        largest_ram_symbols(&nm.stdout, LARGEST)
    } else {
        Vec::new()
    };
    Ok(Report {
        title: format!("firmware broker size, core/size-probe ({TARGET})"),
        flash_goal: FLASH_GOAL,
        ram_goal: RAM_GOAL,
        sections,
        largest,
    })
}

/// The directory of rustup's LLVM tools: `$(rustc --print sysroot)/lib/rustlib/<host>/bin`.
fn llvm_tools_bin(ctx: &Ctx) -> Result<PathBuf, String> {
    let sysroot = ctx.probe(&mut ctx.command("rustc", ["--print", "sysroot"]))?;
    if !sysroot.success {
        return Err("`rustc --print sysroot` failed".to_owned());
    }
    let rustlib = Path::new(sysroot.stdout.trim()).join("lib").join("rustlib");
    let entries =
        fs::read_dir(&rustlib).map_err(|e| format!("cannot list {}: {e}", rustlib.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("llvm-size").is_file())
        .collect();
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        format!(
            "llvm-size not found under {}/*/bin; install it with `rustup component add \
             llvm-tools`",
            rustlib.display()
        )
    })
}

/// Reads `llvm-size -B -d` output:
///
/// ```text
///    text    data     bss     dec     hex filename
///   52712       0   39744   92456   16928 target/.../fulmar-size-probe
/// ```
fn parse_berkeley(output: &str) -> Result<Berkeley, String> {
    let mut lines = output.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("llvm-size printed nothing")?
        .split_whitespace()
        .collect();
    let values: Vec<&str> = lines
        .next()
        .ok_or("llvm-size printed no totals")?
        .split_whitespace()
        .collect();
    let column = |name: &str| -> Result<u64, String> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("llvm-size output has no `{name}` column: {output:?}"))?;
        values
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("llvm-size output has no number for `{name}`: {output:?}"))
    };
    Ok(Berkeley {
        text: column("text")?,
        data: column("data")?,
        bss: column("bss")?,
    })
}

/// The `count` largest data and bss symbols (of non-zero size) in `llvm-nm --print-size --size-sort
/// --radix=d -C` output (`address size type name`), largest first, with Rust's hash
/// suffix dropped from their names.
fn largest_ram_symbols(output: &str, count: usize) -> Vec<(u64, String)> {
    let mut symbols: Vec<(u64, String)> = output
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, ' ');
            let (_address, size, kind, name) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            if !matches!(kind, "b" | "B" | "d" | "D") {
                return None;
            }
            let name = match name.rsplit_once("::h") {
                Some((stem, hash))
                    if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    stem
                }
                _ => name,
            };
            let size: u64 = size.parse().ok()?;
            (size > 0).then(|| (size, name.to_owned()))
        })
        .collect();
    symbols.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    symbols.truncate(count);
    symbols
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berkeley_totals_are_read_by_column_name() {
        let output = "   text\t   data\t    bss\t    dec\t    hex\tfilename\n  \
                      52712\t      8\t  39744\t  92464\t  16930\t/t/fulmar-size-probe\n";
        assert_eq!(
            parse_berkeley(output).unwrap(),
            Berkeley {
                text: 52712,
                data: 8,
                bss: 39744
            }
        );
        assert!(parse_berkeley("").is_err());
        assert!(parse_berkeley("text data\n1 2\n").is_err(), "no bss column");
    }

    #[test]
    fn largest_statics_skip_code_and_strip_hashes() {
        let output = "\
0134217792 0000000960 R __INTERRUPTS
0536870912 0000002048 b probe::main::RX::hcebcb94c598030be
0536875008 0000035648 b probe::main::BROKER::hfbd1dbedb4a86786
0134223360 0000008224 t fulmar_core::broker::Broker<S,H>::handle_packet::h41f80d8e3f683847
0536872960 0000002048 b probe::main::TX::hee6d252092bb045b
0536911360 0000000000 B __ebss
";
        assert_eq!(
            largest_ram_symbols(output, 2),
            [
                (35648, "probe::main::BROKER".to_owned()),
                (2048, "probe::main::RX".to_owned())
            ]
        );
    }

    #[test]
    fn report_flags_what_is_over() {
        let report = |text, data, bss| Report {
            title: "probe".to_owned(),
            flash_goal: FLASH_GOAL,
            ram_goal: RAM_GOAL,
            sections: Berkeley { text, data, bss },
            largest: Vec::new(),
        };
        assert!(report(FLASH_GOAL, 0, RAM_GOAL).within_goals());
        assert!(
            !report(FLASH_GOAL - 7, 8, 0).within_goals(),
            ".data counts as flash"
        );
        assert!(
            !report(0, 8, RAM_GOAL - 7).within_goals(),
            ".data counts as RAM"
        );
        let text = report(1000, 0, RAM_GOAL + 1).render();
        assert!(text.contains("PASS") && text.contains("OVER"), "{text}");
    }
}
