//! The Python `paho-mqtt` client for end-to-end tests: where its interpreter is, and how to
//! run a script with it.
//!
//! `cargo xtask test`'s setup suite makes a virtual environment at
//! `~/.cache/fulmar/venv` (`python3 -m venv`, then `pip install paho-mqtt`); set
//! `FULMAR_PYTHON` to use another interpreter that has paho-mqtt 2.x. A test that needs
//! paho fails, saying how to install it, when neither is there: a test that skips itself
//! for want of its client would never run.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The venv the setup suite makes, relative to `$HOME`.
pub const VENV: &str = ".cache/fulmar/venv";

/// The Python interpreter that has paho-mqtt.
///
/// # Panics
/// If there is none, with the commands that make one.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("FULMAR_PYTHON") {
        return PathBuf::from(python);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let python = home.join(VENV).join("bin/python");
    assert!(
        python.exists(),
        "no Python with paho-mqtt at {}: run `cargo xtask test setup`, or \
         `python3 -m venv ~/{VENV} && ~/{VENV}/bin/pip install paho-mqtt`, or set \
         FULMAR_PYTHON",
        python.display()
    );
    python
}

/// Runs `script` (Python source; `sys.argv[1:]` are `args`) with paho's interpreter, at most
/// `timeout`, and returns its output.
///
/// # Panics
/// If it cannot start or does not end in time.
pub fn run(script: &str, args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait for python").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect python's output");
            panic!(
                "the paho script did not end within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect python's output")
}
