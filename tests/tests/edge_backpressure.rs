//! Overload never loses an acknowledged message (issue: "Fulmar applies backpressure
//! instead"): several QoS 1 publishers flood one subscriber far faster than its queue
//! limit allows; the broker slows them down instead of dropping, so every message
//! arrives, in order per publisher. Mosquitto, in the same situation, acknowledges
//! everything and drops all but its queue's worth.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use fulmar_tests::{Fulmar, Lines};

const PUBLISHERS: usize = 4;
/// Far beyond the broker's default per-subscriber queue (1000 messages).
const PER_PUBLISHER: usize = 5_000;

#[test]
fn qos1_fan_in_beyond_the_queue_loses_nothing() {
    let broker = Fulmar::start();
    let port = broker.port().to_string();
    let total = PUBLISHERS * PER_PUBLISHER;
    let mut subscriber = Command::new("mosquitto_sub");
    subscriber.args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", "load/#"]);
    subscriber.args(["-v", "-i", "sink", "-C", &total.to_string()]);
    let sub = Lines::spawn(subscriber);
    // Let the subscription be in place before the flood starts.
    std::thread::sleep(Duration::from_millis(300));

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let mut child = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-l"])
                .args(["-t", &format!("load/{p}"), "-i", &format!("source-{p}")])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("run mosquitto_pub");
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let lines: String = (0..PER_PUBLISHER).map(|i| format!("{i}\n")).collect();
            std::thread::spawn(move || {
                // A broken pipe shows up below as a publisher failure.
                let _ = stdin.write_all(lines.as_bytes());
            });
            child
        })
        .collect();

    let mut next = [0usize; PUBLISHERS];
    for received in 0..total {
        let line = sub
            .next_line(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("only {received} of {total} messages arrived"));
        let (topic, payload) = line
            .split_once(' ')
            .expect("mosquitto_sub -v: topic payload");
        let p: usize = topic
            .strip_prefix("load/")
            .and_then(|p| p.parse().ok())
            .expect("a load/N topic");
        let n: usize = payload.parse().expect("a numbered payload");
        // First deliveries keep each publisher's order (MQTT 3.1.1 §4.6).
        assert_eq!(n, next[p], "publisher {p}: out of order or lost");
        next[p] += 1;
    }
    for mut publisher in publishers {
        let status = publisher.wait().expect("wait for mosquitto_pub");
        assert!(status.success(), "a publisher failed: {status}");
    }
}
