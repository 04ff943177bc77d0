//! The context every xtask command runs in, and how child processes are started.
//!
//! Every child command is echoed as a copy-pasteable shell line (`$ cargo ...`) before it
//! runs, so a CI log shows exactly what to rerun locally. Output is streamed straight through;
//! where we also need to read it (libtest counts) it is teed line by line.

use std::cell::Cell;
use std::env;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the workspace is and where builds go.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The workspace root: the directory holding the root `Cargo.toml`.
    pub(crate) root: PathBuf,
    /// Cargo's target directory, absolute: `$CARGO_TARGET_DIR`, or `<root>/target`.
    pub(crate) target_dir: PathBuf,
    /// Set once `apt-get update` has run, so several package installs update only once.
    pub(crate) apt_updated: Cell<bool>,
}

impl Ctx {
    /// Finds the workspace root and target directory.
    pub(crate) fn new() -> Result<Ctx, String> {
        // The xtask crate sits one level below the workspace root. The path is baked in at
        // compile time so the binary works whichever directory `cargo xtask` is run from.
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .ok_or_else(|| format!("{} has no parent directory", manifest_dir.display()))?
            .to_path_buf();
        let target_dir = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                // Cargo reads a relative CARGO_TARGET_DIR against the directory it was started
                // in. Children here run in other directories (the fuzz suite runs in core/),
                // so pin it down now.
                let cwd = env::current_dir()
                    .map_err(|e| format!("cannot read the current directory: {e}"))?;
                cwd.join(dir)
            }
            _ => root.join("target"),
        };
        Ok(Ctx {
            root,
            target_dir,
            apt_updated: Cell::new(false),
        })
    }

    /// A `program args...` command that runs in the workspace root.
    pub(crate) fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args).current_dir(&self.root);
        command
    }

    /// A `cargo args...` command in the workspace root, building into [`Ctx::target_dir`].
    pub(crate) fn cargo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command("cargo", args);
        // Set explicitly (not just inherited) so every child agrees on one absolute path,
        // including those started in a subdirectory.
        command.env("CARGO_TARGET_DIR", &self.target_dir);
        command
    }

    /// Echoes `command`, runs it with the terminal's stdout and stderr, and fails unless it
    /// exits successfully.
    pub(crate) fn run(&self, command: &mut Command) -> Result<(), String> {
        let line = self.echo(command);
        let status = command
            .status()
            .map_err(|e| format!("could not start `{line}`: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{line}` failed ({status})"))
        }
    }

    /// Like [`Ctx::run`], but also hands each line of the child's stdout to `on_line` after
    /// printing it. Stderr goes straight to the terminal.
    pub(crate) fn run_teed(
        &self,
        command: &mut Command,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), String> {
        let line = self.echo(command);
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start `{line}`: {e}"))?;
        let result = child
            .stdout
            .take()
            .ok_or_else(|| format!("`{line}`: stdout was not captured"))
            .and_then(|stdout| tee_lines(stdout, &mut on_line));
        // Wait even when teeing failed, so the child is reaped; it sees a closed pipe and
        // stops on its own.
        let status = child
            .wait()
            .map_err(|e| format!("could not wait for `{line}`: {e}"))?;
        result.map_err(|e| format!("`{line}`: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{line}` failed ({status})"))
        }
    }

    /// Echoes and runs a query whose output we read rather than show (`rustup target list`,
    /// `dpkg -s`). Fails only when the program cannot be started: a non-zero exit is an
    /// answer the caller interprets.
    pub(crate) fn probe(&self, command: &mut Command) -> Result<Probe, String> {
        let line = self.echo(command);
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not start `{line}`: {e}"))?;
        Ok(Probe {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }

    /// Prints `$ command` (with a `cd` when it runs outside the root) and returns the line.
    fn echo(&self, command: &Command) -> String {
        let mut line = quote(command.get_program());
        for arg in command.get_args() {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        if let Some(dir) = command.get_current_dir()
            && dir != self.root
        {
            let shown = dir.strip_prefix(&self.root).unwrap_or(dir);
            line = format!("(cd {} && {line})", quote(shown.as_os_str()));
        }
        println!("$ {line}");
        line
    }
}

/// Runs a command's body with a fresh [`Ctx`]: exit 0 when it succeeds, 1 with its error
/// printed when it (or finding the workspace) fails.
pub(crate) fn with_ctx(body: impl FnOnce(&Ctx) -> Result<(), String>) -> std::process::ExitCode {
    match Ctx::new().and_then(|ctx| body(&ctx)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a [`Ctx::probe`] saw.
#[derive(Debug)]
pub(crate) struct Probe {
    /// Whether the command exited with status 0.
    pub(crate) success: bool,
    /// Its standard output, lossily decoded.
    pub(crate) stdout: String,
}

/// Copies `reader` to our stdout line by line, calling `on_line` with each line (without
/// its line ending). Bytes are copied as they are, so non-UTF-8 output survives.
fn tee_lines(reader: impl std::io::Read, on_line: &mut impl FnMut(&str)) -> Result<(), String> {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let stdout = std::io::stdout();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("reading its output: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        let mut out = stdout.lock();
        // Flush per line so our output interleaves correctly with the child's stderr.
        out.write_all(&buf)
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing its output: {e}"))?;
        on_line(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
    }
}

/// Quotes one word for a POSIX shell, leaving common safe words bare so echoed commands stay
/// readable.
pub(crate) fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_bare() {
        assert_eq!(
            quote(OsStr::new("-max_total_time=30")),
            "-max_total_time=30"
        );
        assert_eq!(quote(OsStr::new("/a/b-c/d.rs")), "/a/b-c/d.rs");
        assert_eq!(quote(OsStr::new("+nightly")), "+nightly");
    }

    #[test]
    fn quote_wraps_spaces_and_quotes() {
        assert_eq!(quote(OsStr::new("")), "''");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn echo_shows_the_directory_relative_to_the_root() {
        let ctx = Ctx {
            root: PathBuf::from("/repo"),
            target_dir: PathBuf::from("/repo/target"),
            apt_updated: Cell::new(false),
        };
        let mut command = ctx.command("cargo", ["fuzz", "list"]);
        assert_eq!(ctx.echo(&command), "cargo fuzz list");
        command.current_dir("/repo/core");
        assert_eq!(ctx.echo(&command), "(cd core && cargo fuzz list)");
    }
}
