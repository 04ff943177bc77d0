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

/// Python helpers a test script may start with (`format!("{HELPERS}{SCRIPT}")`):
/// `client(name, protocol, port)` connects a paho client (`mqtt.MQTTv311`, `mqtt.MQTTv5`)
/// to 127.0.0.1 and waits for its CONNACK; its network thread queues what it saw
/// (`("connack", code)`, `("suback", codes)`, `("message", m)`), in order, for
/// `expect(c, kind)`, which waits at most `WAIT` seconds (a script may set it).
pub const HELPERS: &str = r#"
import queue
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WAIT = 20

def client(name, protocol, port):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol,
                    userdata=queue.Queue())
    c.on_connect = lambda c, q, flags, reason, props: q.put(("connack", reason.value))
    c.on_subscribe = lambda c, q, mid, reasons, props: q.put(
        ("suback", [r.value for r in reasons]))
    c.on_message = lambda c, q, m: q.put(("message", m))
    c.connect("127.0.0.1", port)
    c.loop_start()
    expect(c, "connack")
    return c

def expect(c, kind):
    got, value = c.user_data_get().get(timeout=WAIT)
    assert got == kind, (kind, got, value)
    return value
"#;

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
