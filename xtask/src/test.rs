//! `cargo xtask test`: every check CI runs, as named suites run in a fixed order.
//!
//! A suite is a name and a function from the context to a [`SuiteResult`]; the runner times
//! each one and prints a summary table at the end. Add a check by adding a row to [`SUITES`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::USAGE_ERROR;
use crate::exec::{Ctx, quote};
use crate::libtest;
use crate::report::{self, Row, Status, SuiteResult};
use crate::setup::{self, EMBEDDED_TARGETS};

/// One named group of checks.
#[derive(Debug)]
pub(crate) struct Suite {
    pub(crate) name: &'static str,
    /// One line for `cargo xtask help test`.
    pub(crate) about: &'static str,
    pub(crate) run: fn(&Ctx) -> SuiteResult,
}

/// Every suite, in the order they run. `setup` comes first because the others need what it
/// installs; cheap checks come before expensive ones so a formatting slip fails in seconds.
pub(crate) const SUITES: &[Suite] = &[
    Suite {
        name: "setup",
        about: "install rustfmt, clippy, the embedded targets, nightly, cargo-fuzz, a C++ compiler, mosquitto-clients, mosquitto, paho-mqtt (venv)",
        run: setup::suite,
    },
    Suite {
        name: "fmt",
        about: "cargo fmt --all -- --check",
        run: fmt,
    },
    Suite {
        name: "clippy",
        about: "clippy -D warnings on the workspace, and on fulmar-core with all features",
        run: clippy,
    },
    Suite {
        name: "doc",
        about: "cargo doc -D warnings: the workspace, and fulmar-core with all features",
        run: doc,
    },
    Suite {
        name: "test",
        about: "cargo test: workspace, fulmar-core with all features, and with none (lib)",
        run: tests,
    },
    Suite {
        name: "nostd",
        about: "build fulmar-core without std for thumbv7em (also with defmt) and riscv32imc",
        run: nostd,
    },
    Suite {
        name: "firmware",
        about: "fmt, clippy and release build of the firmware workspace (edge-firmware/)",
        run: crate::firmware::suite,
    },
    Suite {
        name: "size",
        about: "size of core/size-probe (fail if over 64 KiB flash or 40 KiB RAM) and of each board's firmware (fail if the QEMU broker firmware is over 96 KiB flash or 48 KiB RAM)",
        run: crate::size::suite,
    },
    Suite {
        name: "cross",
        about: "build static fulmar for aarch64-musl and armv7 (cargo xtask dist); pub/sub through each under QEMU",
        run: crate::dist::suite,
    },
    Suite {
        name: "fuzz",
        about: "run each core/fuzz target for FULMAR_FUZZ_SECONDS (default 30) on nightly",
        run: fuzz,
    },
];

/// Seconds each fuzz target runs when `FULMAR_FUZZ_SECONDS` is unset.
const DEFAULT_FUZZ_SECONDS: u64 = 30;

/// `cargo xtask test [SUITE...]`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    let selected = match select(args) {
        Ok(selected) => selected,
        Err(e) => {
            eprintln!("error: {e}\n");
            eprint!("{}", help());
            return ExitCode::from(USAGE_ERROR);
        }
    };
    // Check the fuzz budget before spending minutes on the other suites.
    if selected.iter().any(|s| s.name == "fuzz")
        && let Err(e) = fuzz_seconds()
    {
        eprintln!("error: {e}");
        return ExitCode::from(USAGE_ERROR);
    }
    let ctx = match Ctx::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };

    let names: Vec<&str> = selected.iter().map(|s| s.name).collect();
    println!("xtask test: running suites: {}", names.join(", "));
    println!("xtask test: workspace root: {}", ctx.root.display());
    println!("xtask test: target dir:     {}", ctx.target_dir.display());

    let mut rows = Vec::new();
    let mut setup_failed = false;
    for (i, suite) in selected.iter().enumerate() {
        if setup_failed {
            // The later suites would only fail again for want of what setup could not
            // install, burying the real error.
            rows.push(Row {
                suite: suite.name,
                status: Status::NotRun,
                result: SuiteResult {
                    note: "setup failed".to_owned(),
                    ..SuiteResult::default()
                },
                seconds: None,
            });
            continue;
        }
        println!(
            "\n==> [{}/{}] {}: {}",
            i + 1,
            selected.len(),
            suite.name,
            suite.about
        );
        let started = Instant::now();
        let result = (suite.run)(&ctx);
        let seconds = started.elapsed().as_secs_f64();
        let status = if result.passed() {
            Status::Pass
        } else {
            Status::Fail
        };
        println!(
            "<== {}: {} in {seconds:.1}s",
            suite.name,
            if status == Status::Pass {
                "pass"
            } else {
                "FAIL"
            }
        );
        setup_failed = suite.name == "setup" && status == Status::Fail;
        rows.push(Row {
            suite: suite.name,
            status,
            result,
            seconds: Some(seconds),
        });
    }

    println!("\n{}", report::summary(&rows));
    if rows.iter().all(|r| r.status == Status::Pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The suites named in `args`, in run order; all of them when `args` is empty.
fn select(args: &[String]) -> Result<Vec<&'static Suite>, String> {
    for arg in args {
        if arg.starts_with('-') {
            return Err(format!("unknown option `{arg}`"));
        }
        if !SUITES.iter().any(|s| s.name == arg) {
            return Err(format!("unknown suite `{arg}`"));
        }
    }
    Ok(SUITES
        .iter()
        .filter(|s| args.is_empty() || args.iter().any(|a| a == s.name))
        .collect())
}

/// The text of `cargo xtask help test`.
pub(crate) fn help() -> String {
    let mut text = String::from(
        "usage: cargo xtask test [SUITE...]\n\n\
         Runs the suites below in this order (only the named ones, if any are named), echoing\n\
         each command, then prints a summary. Exits 1 if any suite failed.\n\nsuites:\n",
    );
    let width = SUITES.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for suite in SUITES {
        text.push_str(&format!("  {:width$}  {}\n", suite.name, suite.about));
    }
    text.push_str(
        "\nenvironment:\n  \
         CARGO_TARGET_DIR     build directory (default <workspace>/target); fuzz builds go to\n                       \
         <dir>/fuzz and fuzz corpora to <dir>/fuzz-corpus/<target>\n  \
         FULMAR_FUZZ_SECONDS  seconds of fuzzing per target (default 30)\n",
    );
    text
}

fn fmt(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    result.check(ctx.run(&mut ctx.cargo(["fmt", "--all", "--", "--check"])));
    result
}

/// API docs build without warnings (broken or private links, bad code blocks): what
/// `cargo doc` shows users is checked like the code.
fn doc(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    for args in [
        &["doc", "--no-deps", "--workspace"][..],
        &["doc", "--no-deps", "-p", "fulmar-core", "--all-features"],
    ] {
        let mut command = ctx.cargo(args);
        command.env("RUSTDOCFLAGS", "-D warnings");
        result.check(ctx.run(&mut command));
    }
    result
}

fn clippy(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    // The workspace run uses each crate's default features; fulmar-core's optional features
    // (defmt, serde, std) carry code of their own, so it is linted again with all of them.
    for args in [
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ][..],
        &[
            "clippy",
            "-p",
            "fulmar-core",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    ] {
        result.check(ctx.run(&mut ctx.cargo(args)));
    }
    result
}

fn tests(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    let mut parser = libtest::Parser::default();
    // --no-fail-fast: without it cargo stops at the first failing test binary, and the
    // summary would under-count both the passes and the failures.
    for args in [
        &["test", "--workspace", "--no-fail-fast"][..],
        &[
            "test",
            "-p",
            "fulmar-core",
            "--all-features",
            "--no-fail-fast",
        ],
        // The bare no_std configuration; only the library's own tests, since integration
        // tests and doctests may reasonably assume `std`.
        &[
            "test",
            "-p",
            "fulmar-core",
            "--no-default-features",
            "--lib",
            "--no-fail-fast",
        ],
    ] {
        result.check(ctx.run_teed(&mut ctx.cargo(args), |line| parser.feed(line)));
    }
    let counts = parser.counts();
    if counts.binaries == 0 && result.passed() {
        // Every run succeeded but we read no results: libtest's output format changed and
        // the summary would report zero tests as a pass.
        result.fail("no `test result:` lines found in the output of cargo test".to_owned());
    }
    if counts.failed > 0 && result.passed() {
        result.fail(format!("{} tests failed", counts.failed));
    }
    result.passed = Some(counts.passed);
    result.failed = Some(counts.failed);
    result.note = format!(
        "incl. {} doctests ({} failed); {} ignored",
        counts.doc_passed + counts.doc_failed,
        counts.doc_failed,
        counts.ignored
    );
    result
}

fn nostd(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    let core_build = ["build", "-p", "fulmar-core", "--no-default-features"];
    for target in EMBEDDED_TARGETS {
        result.check(ctx.run(ctx.cargo(core_build).args(["--target", target])));
    }
    // defmt is the firmware's logging; its derives must build on the firmware target.
    result.check(ctx.run(ctx.cargo(core_build).args([
        "--features",
        "defmt",
        "--target",
        EMBEDDED_TARGETS[0],
    ])));
    result.note = format!("{} builds", EMBEDDED_TARGETS.len() + 1);
    result
}

/// `FULMAR_FUZZ_SECONDS`, or the default.
fn fuzz_seconds() -> Result<u64, String> {
    let Some(value) = std::env::var_os("FULMAR_FUZZ_SECONDS") else {
        return Ok(DEFAULT_FUZZ_SECONDS);
    };
    let value = value.to_string_lossy();
    match value.trim().parse::<u64>() {
        // libFuzzer reads -max_total_time=0 as "no limit", which would hang CI.
        Ok(0) => Err("FULMAR_FUZZ_SECONDS=0 would fuzz forever; use a positive number".to_owned()),
        Ok(seconds) => Ok(seconds),
        Err(_) => Err(format!(
            "FULMAR_FUZZ_SECONDS must be a whole number of seconds, not `{value}`"
        )),
    }
}

fn fuzz(ctx: &Ctx) -> SuiteResult {
    let mut result = SuiteResult::default();
    let seconds = match fuzz_seconds() {
        Ok(seconds) => seconds,
        Err(e) => {
            result.fail(e);
            return result;
        }
    };
    let core_dir = ctx.root.join("core");
    let fuzz_dir = core_dir.join("fuzz");
    let targets = match fuzz_targets(&fuzz_dir) {
        Ok(targets) => targets,
        Err(e) => {
            result.fail(e);
            return result;
        }
    };
    println!("fuzz: targets: {}; {seconds}s each", targets.join(", "));

    let (mut passed, mut failed) = (0, 0);
    for target in &targets {
        match fuzz_one(ctx, &core_dir, &fuzz_dir, target, seconds) {
            Ok(()) => passed += 1,
            Err(e) => {
                failed += 1;
                result.fail(e);
            }
        }
    }
    result.passed = Some(passed);
    result.failed = Some(failed);
    result.note = format!("targets, {seconds}s each");
    result
}

/// The fuzz targets: the stems of `core/fuzz/fuzz_targets/*.rs`, sorted. None at all is an
/// error, so a moved or emptied fuzz crate cannot turn the suite into a silent pass.
fn fuzz_targets(fuzz_dir: &Path) -> Result<Vec<String>, String> {
    let dir = fuzz_dir.join("fuzz_targets");
    let entries = fs::read_dir(&dir)
        .map_err(|e| format!("cannot list fuzz targets in {}: {e}", dir.display()))?;
    let mut targets = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list fuzz targets in {}: {e}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem()
        {
            targets.push(stem.to_string_lossy().into_owned());
        }
    }
    if targets.is_empty() {
        return Err(format!("no fuzz targets (*.rs) in {}", dir.display()));
    }
    targets.sort();
    Ok(targets)
}

fn fuzz_one(
    ctx: &Ctx,
    core_dir: &Path,
    fuzz_dir: &Path,
    target: &str,
    seconds: u64,
) -> Result<(), String> {
    // The corpus libFuzzer grows lives in the target dir, not the clone: the clone stays
    // clean, and with a persistent target dir (as .ci/run sets) coverage builds up run to run.
    let corpus = ctx.target_dir.join("fuzz-corpus").join(target);
    fs::create_dir_all(&corpus)
        .map_err(|e| format!("cannot create fuzz corpus {}: {e}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(target);

    // cargo-fuzz finds ./fuzz from the crate directory it runs in.
    let mut command = ctx.command("cargo", ["+nightly", "fuzz", "run"]);
    command
        .current_dir(core_dir)
        // Overflow checks on: wrapping length arithmetic is exactly the bug a codec fuzzer
        // should find, and release builds would hide it.
        .arg("--debug-assertions")
        .arg("--target-dir")
        .arg(ctx.target_dir.join("fuzz"))
        .arg(target)
        .arg(&corpus);
    // libFuzzer writes new inputs only to the first corpus directory, so the checked-in
    // seeds are read but never modified.
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    command.arg("--").arg(format!("-max_total_time={seconds}"));

    let started = SystemTime::now();
    ctx.run(&mut command).map_err(|e| {
        let artifacts = new_files(&fuzz_dir.join("artifacts").join(target), started);
        let mut message = format!("fuzz target {target}: {e}");
        if artifacts.is_empty() {
            message.push_str("; no new crash artifact (see the output above)");
        }
        for artifact in artifacts {
            // Same flags and build directory as the run, so reproducing reuses its build.
            message.push_str(&format!(
                "\n    crash artifact: {artifact}\n    reproduce: (cd core && cargo +nightly fuzz \
                 run --debug-assertions --target-dir {target_dir} {target} {artifact})",
                artifact = quote(artifact.as_os_str()),
                target_dir = quote(ctx.target_dir.join("fuzz").as_os_str()),
            ));
        }
        message
    })
}

/// Files in `dir` modified at or after `since`: the artifacts one fuzz run wrote. A missing
/// directory has none.
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified >= since)
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(suites: &[&Suite]) -> Vec<&'static str> {
        suites.iter().map(|s| s.name).collect()
    }

    #[test]
    fn select_runs_everything_by_default() {
        let all: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
        assert_eq!(names(&select(&[]).unwrap()), all);
    }

    #[test]
    fn select_keeps_run_order_and_rejects_unknown_names() {
        let args = ["clippy".to_owned(), "fmt".to_owned()];
        assert_eq!(names(&select(&args).unwrap()), ["fmt", "clippy"]);
        assert!(select(&["lint".to_owned()]).is_err());
        assert!(select(&["--quick".to_owned()]).is_err());
    }

    #[test]
    fn suite_names_are_unique() {
        for (i, a) in SUITES.iter().enumerate() {
            assert!(
                SUITES[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
    }

    #[test]
    fn fuzz_targets_are_the_sorted_rs_files() {
        let dir = std::env::temp_dir().join(format!("xtask-fuzz-targets-{}", std::process::id()));
        let targets = dir.join("fuzz_targets");
        fs::create_dir_all(&targets).unwrap();
        assert!(fuzz_targets(&dir).is_err(), "an empty directory must fail");
        for file in ["decode.rs", "topic.rs", "README.md"] {
            fs::write(targets.join(file), "").unwrap();
        }
        assert_eq!(fuzz_targets(&dir).unwrap(), ["decode", "topic"]);
        fs::remove_dir_all(&dir).unwrap();
        assert!(fuzz_targets(&dir).is_err(), "a missing directory must fail");
    }
}
