//! Broker shards (`runtime.shards`): clients spread over several broker tasks still meet
//! as on one broker — messages cross shards in order and once, a shared group spans
//! shards with each message to one member, retained messages and persistent sessions are
//! found from any shard and survive kill -9.

use std::process::Command;
use std::time::{Duration, Instant};

use fulmar_tests::{
    DataDir, Fulmar, Lines, mosquitto_sub, mosquitto_sub_lines, next_message, wait_until,
};

const SHARDS: &str = "runtime.shards=3";

fn start(data: &DataDir) -> Fulmar {
    Fulmar::start_with(&["--set", SHARDS, "--data-dir", data.arg()])
}

/// Publishes each of `payloads` on `topic` at `qos` from one connection.
fn publish_lines(port: u16, id: &str, topic: &str, qos: &str, payloads: &[String]) {
    fulmar_tests::mosquitto_pub_lines(port, &["-i", id, "-q", qos, "-t", topic], payloads);
}

/// The shards the log says clients connected to.
fn shards_used(broker: &Fulmar) -> std::collections::BTreeSet<String> {
    broker
        .log()
        .lines()
        .filter(|l| l.contains("client connected"))
        .filter_map(|l| l.split("shard=").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

/// Persistent sessions `ids` subscribed to `filter` at QoS 1, whose clients are gone
/// (killed, so the broker sees the connections drop).
fn leave_offline_sessions(broker: &Fulmar, ids: &[String], filter: &str) {
    for id in ids {
        let mut sub = mosquitto_sub(broker.port(), &["-i", id, "-c", "-q", "1", "-t", filter]);
        sub.kill();
    }
    wait_until(Duration::from_secs(5), || {
        broker
            .log()
            .matches("connection closed by the peer")
            .count()
            >= ids.len()
    });
}

#[test]
fn messages_cross_shards_in_order_and_once() {
    let data = DataDir::new("shards-order");
    let broker = start(&data);
    let port = broker.port();
    let subs: Vec<Lines> = (0..6)
        .map(|i| {
            mosquitto_sub(
                port,
                &["-i", &format!("reader-{i}"), "-q", "1", "-t", "t/#"],
            )
        })
        .collect();
    let payloads: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    publish_lines(port, "writer", "t/x", "1", &payloads);
    for sub in &subs {
        let got: Vec<String> = (0..payloads.len()).map(|_| next_message(sub)).collect();
        assert_eq!(got, payloads, "every message, in order");
        assert_eq!(
            sub.next_line(Duration::from_millis(200)),
            None,
            "and no more"
        );
    }
    let used = shards_used(&broker);
    assert!(used.len() >= 2, "clients landed on {used:?}");
}

#[test]
fn a_shared_group_spans_shards_with_each_message_to_one_member() {
    // [MQTT-4.8.2-2] across shards: the publishing shard chooses once.
    let data = DataDir::new("shards-share");
    let broker = start(&data);
    let port = broker.port();
    let members: Vec<Lines> = (0..4)
        .map(|i| {
            mosquitto_sub(
                port,
                &[
                    "-i",
                    &format!("worker-{i}"),
                    "-q",
                    "1",
                    "-t",
                    "$share/g/jobs",
                ],
            )
        })
        .collect();
    let payloads: Vec<String> = (0..60).map(|i| format!("job{i}")).collect();
    publish_lines(port, "boss", "jobs", "1", &payloads);
    let mut got = Vec::new();
    let mut per_member = vec![0usize; members.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < payloads.len() && Instant::now() < deadline {
        for (i, m) in members.iter().enumerate() {
            while let Some(line) = m.next_line(Duration::from_millis(20)) {
                if !line.starts_with("Client ") && !line.starts_with("Subscribed ") {
                    got.push(line);
                    per_member[i] += 1;
                }
            }
        }
    }
    for m in &members {
        while let Some(line) = m.next_line(Duration::from_millis(100)) {
            assert!(line.starts_with("Client "), "a message twice: {line}");
        }
    }
    got.sort();
    let mut wanted = payloads.clone();
    wanted.sort();
    assert_eq!(got, wanted, "each message exactly once");
    let serving = per_member.iter().filter(|&&n| n > 0).count();
    assert!(serving >= 2, "the group's work is shared: {per_member:?}");
    assert!(shards_used(&broker).len() >= 2);
}

#[test]
fn retained_messages_and_persistent_sessions_survive_kill_9_across_shards() {
    let data = DataDir::new("shards-restart");
    let mut broker = start(&data);
    let port = broker.port();
    publish_lines(port, "station", "weather/now", "1", &["sunny".to_owned()]);
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", "station"])
        .args(["-q", "1", "-r", "-t", "weather/retained", "-m", "cloudy"])
        .status()
        .expect("mosquitto_pub");
    // A retained message is found from every shard.
    for i in 0..4 {
        let sub = mosquitto_sub(
            port,
            &["-i", &format!("viewer-{i}"), "-t", "weather/retained"],
        );
        assert_eq!(next_message(&sub), "cloudy");
    }
    // Persistent sessions on several shards, offline while messages arrive.
    let ids: Vec<String> = (0..4).map(|i| format!("logger-{i}")).collect();
    leave_offline_sessions(&broker, &ids, "log/#");
    let payloads: Vec<String> = (0..20).map(|i| format!("entry{i}")).collect();
    publish_lines(port, "app", "log/app", "1", &payloads);
    broker.kill();

    let broker = start(&data);
    let port = broker.port();
    let sub = mosquitto_sub(port, &["-i", "viewer-late", "-t", "weather/retained"]);
    assert_eq!(next_message(&sub), "cloudy", "retained after kill -9");
    for id in &ids {
        // The queued messages come right after CONNACK, before a SUBACK.
        let sub = mosquitto_sub_lines(port, &["-i", id, "-c", "-q", "1", "-t", "log/#"]);
        let got: Vec<String> = (0..payloads.len())
            .filter_map(|_| sub.next_line(Duration::from_secs(10)))
            .collect();
        assert_eq!(got, payloads, "{id}: every acknowledged message, in order");
    }
    assert!(shards_used(&broker).len() >= 2);
}

/// The shard count may differ from one run to the next (`"auto"` follows the cores the
/// process gets): each stored session is restored on the shard its client maps to now,
/// and every retained message on every shard. 1 shard, then 3, then 2, with kill -9 in
/// between: messages queued for offline persistent sessions under each count all arrive,
/// in order, once.
#[test]
fn stored_state_follows_a_changed_shard_count() {
    let data = DataDir::new("shards-recount");
    let start_with = |count: &str| {
        Fulmar::start_with(&[
            "--set",
            &format!("runtime.shards={count}"),
            "--data-dir",
            data.arg(),
        ])
    };
    let ids: Vec<String> = (0..6).map(|i| format!("keeper-{i}")).collect();
    let first: Vec<String> = (0..10).map(|i| format!("one-{i}")).collect();
    let second: Vec<String> = (0..10).map(|i| format!("three-{i}")).collect();

    let mut broker = start_with("1");
    let port = broker.port();
    leave_offline_sessions(&broker, &ids, "queue/#");
    publish_lines(port, "feeder", "queue/a", "1", &first);
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", "feeder"])
        .args(["-q", "1", "-r", "-t", "state/door", "-m", "open"])
        .status()
        .expect("mosquitto_pub");
    broker.kill();

    // Three shards: the sessions, now spread, still take what is published.
    let mut broker = start_with("3");
    let port = broker.port();
    publish_lines(port, "feeder", "queue/b", "1", &second);
    broker.kill();

    let broker = start_with("2");
    let port = broker.port();
    for i in 0..3 {
        let sub = mosquitto_sub(port, &["-i", &format!("door-{i}"), "-t", "state/door"]);
        assert_eq!(next_message(&sub), "open", "retained after two recounts");
    }
    let wanted: Vec<String> = first.iter().chain(&second).cloned().collect();
    for id in &ids {
        let sub = mosquitto_sub_lines(port, &["-i", id, "-c", "-q", "1", "-t", "queue/#"]);
        let got: Vec<String> = (0..wanted.len())
            .filter_map(|_| sub.next_line(Duration::from_secs(10)))
            .collect();
        assert_eq!(got, wanted, "{id}: every acknowledged message, in order");
        assert_eq!(
            sub.next_line(Duration::from_millis(200)),
            None,
            "{id}: once"
        );
    }
    assert!(shards_used(&broker).len() >= 2);
}

/// A will with a delay whose connection a graceful stop (SIGTERM) closed is kept with its
/// session and goes out after the restart, once its delay has passed, to a persistent
/// session that was offline meanwhile ([MQTT-3.1.3-9]: not before the delay; §3.1.2.5: the
/// will is published when the connection ends without DISCONNECT, here the server's).
#[test]
fn a_delayed_will_outlives_a_graceful_stop_across_shards() {
    let data = DataDir::new("shards-will");
    let mut broker = start(&data);
    let port = broker.port();
    // `-c` in 5.0: a session that never expires.
    let v5 = ["-V", "mqttv5"];
    let reader_args = ["-i", "will-reader", "-c", "-q", "1", "-t", "alarm/#"];
    let mut reader = mosquitto_sub(port, &[&v5[..], &reader_args[..]].concat());
    reader.kill();
    let will = [
        "-i",
        "will-holder",
        "-c",
        "-t",
        "chatter",
        "--will-topic",
        "alarm/holder",
        "--will-payload",
        "holder gone",
        "--will-qos",
        "1",
        "-D",
        "will",
        "will-delay-interval",
        "2",
    ];
    let mut holder = mosquitto_sub(port, &[&v5[..], &will[..]].concat());
    let status = broker.terminate().expect("fulmar exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    holder.kill();
    assert!(
        shards_used(&broker).len() >= 2,
        "the two clients should be on different shards"
    );
    drop(broker);

    let broker = start(&data);
    let port = broker.port();
    // Online again before the will is due: it arrives as the delay passes.
    let sub = mosquitto_sub_lines(port, &[&v5[..], &reader_args[..]].concat());
    // It went out neither at the stop nor at the restart: its delay (2 s from the stop)
    // has not passed when the reader is back, a fraction of a second later.
    assert_eq!(
        sub.next_line(Duration::from_millis(800)),
        None,
        "not before its delay"
    );
    assert_eq!(
        sub.next_line(Duration::from_secs(10)).as_deref(),
        Some("holder gone"),
        "the delayed will reached the offline persistent session"
    );
}

/// Runs `mosquitto_sub -E` (connect, subscribe, leave) with `args`; its output and whether
/// it succeeded.
fn subscribe_and_leave(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["10", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-E", "-q", "1", "-t", "limit/x"])
        .args(args)
        .output()
        .expect("run mosquitto_sub");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_session_limit_holds_across_shards() {
    let data = DataDir::new("shards-session-limit");
    let broker = Fulmar::start_with(&[
        "--set",
        SHARDS,
        "--set",
        "limits.max_sessions=4",
        "--set",
        "limits.max_connections=4",
        "--data-dir",
        data.arg(),
    ]);
    let port = broker.port();
    // Four stored sessions (3.1.1 without clean session), spread over the shards.
    for i in 0..4 {
        let (ok, out) = subscribe_and_leave(port, &["-c", "-i", &format!("keep-{i}")]);
        assert!(ok, "session {i} refused: {out}");
    }
    let used = shards_used(&broker);
    assert!(used.len() >= 2, "sessions landed on {used:?}");
    // A fifth is refused whatever its shard: 3.1.1 return code 3.
    for id in ["extra-a", "extra-b", "extra-c"] {
        let (ok, out) = subscribe_and_leave(port, &["-c", "-i", id]);
        assert!(!ok, "{id} got a fifth session: {out}");
        assert!(out.contains("unavailable"), "{id}: {out}");
    }
    // Ending one stored session (clean session) makes room on any shard.
    let (ok, out) = subscribe_and_leave(port, &["-i", "keep-0"]);
    assert!(ok, "{out}");
    let (ok, out) = subscribe_and_leave(port, &["-c", "-i", "extra-a"]);
    assert!(ok, "a place was given back: {out}");
}
