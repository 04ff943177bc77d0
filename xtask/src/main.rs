//! `cargo xtask`: Fulmar's task runner (`cargo xtask help` lists the commands).
//!
//! It is plain Rust with the standard library only, so a fresh clone needs nothing but rustup
//! to run every check CI runs, and CI runs exactly what a developer runs. The alias lives in
//! `.cargo/config.toml`.
//!
//! This file parses the command line and dispatches; the work lives in modules:
//! - `test`: the `test` command and its suites (fmt, clippy, tests, no_std builds, fuzzing).
//! - `setup`: installers for the toolchains, targets and tools the suites need.
//! - `exec`: the context commands run in, and how child processes are echoed and started.
//! - `libtest`: reading pass/fail counts out of libtest's output.
//! - `report`: suite results and the summary table.
//! - `size`: the `size` command (and suite): flash and RAM of the firmware broker.
//! - `firmware`: the `qemu` command (boot the QEMU firmware) and the `firmware` suite.
//! - `bench`: the `bench` command: fulmar, Mosquitto and rumqttd side by side.
//! - `dist`: the `dist` command (static ARM binaries) and the `cross` suite (QEMU).
//!
//! To add a subcommand (`qemu`, `dist`, `bench`), add a module and a row to
//! [`COMMANDS`]; to add a suite to `cargo xtask test`, add a row to `test::SUITES`.

mod bench;
mod dist;
mod exec;
mod firmware;
mod libtest;
mod report;
mod setup;
mod size;
mod test;
mod trim_paths;

use std::process::ExitCode;

/// One subcommand: `cargo xtask <name> [args...]`.
struct Command {
    name: &'static str,
    /// Argument synopsis shown by `help`.
    usage: &'static str,
    about: &'static str,
    /// Runs the command with the arguments after its name.
    run: fn(&[String]) -> ExitCode,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "test",
        usage: "test [SUITE...]",
        about: "run every CI check (or the named suites) and print a summary",
        run: test::main,
    },
    Command {
        name: "size",
        usage: "size",
        about: "build the firmware broker for thumbv7em and check its flash and RAM budget",
        run: size::main,
    },
    Command {
        name: "qemu",
        usage: "qemu [--mqtt-port PORT]",
        about: "build the QEMU firmware and boot it, MQTT on 127.0.0.1:PORT, logs on stdout",
        run: firmware::main,
    },
    Command {
        name: "bench",
        usage: "bench [OPTIONS]",
        about: "load-test fulmar, Mosquitto and rumqttd side by side on loopback; print a table",
        run: bench::main,
    },
    Command {
        name: "dist",
        usage: "dist [TARGET...]",
        about: "build static fulmar binaries for aarch64 (musl) and armv7 into <target>/dist",
        run: dist::main,
    },
    Command {
        name: "help",
        usage: "help [COMMAND]",
        about: "print this help, or a command's help",
        run: help,
    },
];

/// Exit code for a command line we do not understand, as distinct from a check that failed.
pub(crate) const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args = match collect_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let Some((name, rest)) = args.split_first() else {
        eprint!("{}", overview());
        return ExitCode::from(USAGE_ERROR);
    };
    if matches!(name.as_str(), "-h" | "--help") {
        print!("{}", overview());
        return ExitCode::SUCCESS;
    }
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(command) => (command.run)(rest),
        None => {
            eprintln!("error: unknown command `{name}`\n");
            eprint!("{}", overview());
            ExitCode::from(USAGE_ERROR)
        }
    }
}

/// The arguments after the program name. Non-UTF-8 arguments are refused rather than
/// mangled: every name this tool accepts is ASCII.
fn collect_args() -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| format!("argument {arg:?} is not valid UTF-8"))
        })
        .collect()
}

fn help(args: &[String]) -> ExitCode {
    match args {
        [] => {
            print!("{}", overview());
            ExitCode::SUCCESS
        }
        [name] if name == "test" => {
            print!("{}", test::help());
            ExitCode::SUCCESS
        }
        [name] if name == "size" => {
            print!("{}", size::help());
            ExitCode::SUCCESS
        }
        [name] if name == "qemu" => {
            print!("{}", firmware::help());
            ExitCode::SUCCESS
        }
        [name] if name == "dist" => {
            print!("{}", dist::help());
            ExitCode::SUCCESS
        }
        [name] if name == "bench" => {
            print!("{}", bench::help());
            ExitCode::SUCCESS
        }
        [name] if COMMANDS.iter().any(|c| c.name == name) => {
            print!("{}", overview());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("error: `help` takes at most one known command name\n");
            eprint!("{}", overview());
            ExitCode::from(USAGE_ERROR)
        }
    }
}

fn overview() -> String {
    let mut text = String::from("usage: cargo xtask <COMMAND> [ARGS...]\n\ncommands:\n");
    let width = COMMANDS.iter().map(|c| c.usage.len()).max().unwrap_or(0);
    for command in COMMANDS {
        text.push_str(&format!("  {:width$}  {}\n", command.usage, command.about));
    }
    text.push_str(
        "\n`cargo xtask help test` lists the test suites and the environment they read.\n",
    );
    text
}
