//! `fulmar bench` against the real `fulmar` broker: a lean smoke test of the load tool
//! (the full comparison is `cargo xtask bench`, which is not part of CI).
//!
//! The rates are modest on purpose: the test checks that the tool counts right (every
//! QoS 1 message delivered once, the report consistent), not how fast the machine is.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use fulmar_tests::{Fulmar, fulmar_bin};

/// Runs `fulmar bench ARGS` against `broker`, bounded in time, and returns the fields of
/// its `result:` line.
fn bench(broker: &Fulmar, args: &[&str]) -> HashMap<String, String> {
    bench_at(broker.port(), args)
}

/// Runs `fulmar bench ARGS` against the broker's listener on `port`.
fn bench_at(port: u16, args: &[&str]) -> HashMap<String, String> {
    let port = port.to_string();
    let output = run_bounded(
        Command::new(fulmar_bin())
            .arg("bench")
            .args(args)
            .args(["--port", &port]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fulmar bench {args:?} failed: {output:?}"
    );
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("result: "))
        .unwrap_or_else(|| panic!("no result line in:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `command`, killing it after `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn fulmar bench");
    let id = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(timeout).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &id.to_string()])
            .status();
        panic!("fulmar bench did not finish within {timeout:?}");
    }
    waiter
        .join()
        .expect("waiter thread")
        .expect("wait for fulmar bench")
}

fn number(fields: &HashMap<String, String>, key: &str) -> u64 {
    fields
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {fields:?}"))
}

#[test]
fn qos1_fan_in_delivers_every_message_once() {
    let broker = Fulmar::start();
    // 4 publishers x 250 msg/s for 1 s: about 1000 messages into one subscriber.
    let fields = bench(
        &broker,
        &[
            "pubsub",
            "--publishers",
            "4",
            "--subscribers",
            "1",
            "--pub-topic",
            "smoke/%i",
            "--sub-topic",
            "smoke/#",
            "--qos",
            "1",
            "--rate",
            "250",
            "--duration",
            "1",
        ],
    );
    let sent = number(&fields, "sent");
    assert!(sent >= 500, "too few messages sent for a test: {fields:?}");
    assert_eq!(number(&fields, "acked"), sent, "{fields:?}");
    assert_eq!(number(&fields, "expected"), sent, "{fields:?}");
    assert_eq!(number(&fields, "delivered"), sent, "{fields:?}");
    assert_eq!(number(&fields, "lost"), 0, "{fields:?}");
    assert_eq!(number(&fields, "duplicates"), 0, "{fields:?}");
    assert_eq!(number(&fields, "errors"), 0, "{fields:?}");
    let (p50, p99, max) = (
        number(&fields, "p50_us"),
        number(&fields, "p99_us"),
        number(&fields, "max_us"),
    );
    assert!(p50 <= p99 && p99 <= max, "{fields:?}");
    // Delivered within the run plus a little: a rate over the publishing second.
    assert!(max < 5_000_000, "a message took over 5 s: {fields:?}");
    assert!(number(&fields, "rate") > 0, "{fields:?}");
}

/// The tool over WebSocket (`--ws`: each write one binary frame, frames read as a byte
/// stream) counts the same way, against fulmar's WebSocket listener.
#[test]
fn qos1_over_websocket_delivers_every_message_once() {
    let broker = Fulmar::start_with(&["--ws-listen", "127.0.0.1:0"]);
    let fields = bench_at(
        broker.listener("ws").port(),
        &[
            "pubsub",
            "--ws",
            "/mqtt",
            "--publishers",
            "2",
            "--subscribers",
            "1",
            "--qos",
            "1",
            "--rate",
            "200",
            "--duration",
            "1",
        ],
    );
    let sent = number(&fields, "sent");
    assert!(sent >= 200, "too few messages sent for a test: {fields:?}");
    assert_eq!(number(&fields, "delivered"), sent, "{fields:?}");
    assert_eq!(number(&fields, "lost"), 0, "{fields:?}");
    assert_eq!(number(&fields, "duplicates"), 0, "{fields:?}");
}

#[test]
fn qos2_fan_out_counts_every_subscriber() {
    let broker = Fulmar::start();
    // One publisher, 5 subscribers of its topic: each message is expected 5 times.
    let fields = bench(
        &broker,
        &[
            "pubsub",
            "--publishers",
            "1",
            "--subscribers",
            "5",
            "--pub-topic",
            "smoke/out",
            "--sub-topic",
            "smoke/out",
            "--qos",
            "2",
            "--rate",
            "200",
            "--duration",
            "1",
            "--mqtt-version",
            "5",
        ],
    );
    let sent = number(&fields, "sent");
    assert!(sent >= 100, "{fields:?}");
    assert_eq!(number(&fields, "expected"), 5 * sent, "{fields:?}");
    assert_eq!(number(&fields, "delivered"), 5 * sent, "{fields:?}");
    assert_eq!(number(&fields, "duplicates"), 0, "{fields:?}");
}

#[test]
fn conn_holds_every_connection() {
    let broker = Fulmar::start();
    let fields = bench(&broker, &["conn", "--count", "200", "--duration", "0.5"]);
    assert_eq!(number(&fields, "connections"), 200, "{fields:?}");
    assert_eq!(number(&fields, "failed"), 0, "{fields:?}");
    assert_eq!(number(&fields, "dropped"), 0, "{fields:?}");
}
