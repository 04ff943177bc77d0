//! Observability of the real `fulmar` binary, as an operator sees it: the `$SYS/broker/...`
//! topics through `mosquitto_sub`, the Prometheus endpoint scraped over a socket, and JSON
//! log lines.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use fulmar_tests::{Fulmar, Lines, metrics_addr, scrape, wait_until};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a mosquitto client against the broker; it must succeed.
fn mosquitto(broker: &Fulmar, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// `mosquitto_sub -v` on `filter`, printing `topic payload` lines.
fn subscribe(broker: &Fulmar, filter: &str, client_id: &str) -> Lines {
    let mut command = Command::new("mosquitto_sub");
    command
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-v", "-i", client_id, "-t", filter]);
    Lines::spawn(command)
}

/// The latest value of every `$SYS` topic seen on a `mosquitto_sub -v` subscription.
struct SysView {
    lines: Lines,
    values: HashMap<String, String>,
}

impl SysView {
    fn new(lines: Lines) -> Self {
        Self {
            lines,
            values: HashMap::new(),
        }
    }

    /// Reads updates until `wanted` holds for the values seen.
    ///
    /// # Panics
    /// If it does not hold within [`TIMEOUT`]; the message shows the values.
    fn until(&mut self, what: &str, wanted: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !wanted(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.lines.next_line(left) else {
                panic!(
                    "{what}: not seen within {TIMEOUT:?}; values: {:#?}",
                    self.values
                );
            };
            let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
            // `retained messages/count` has a space in its topic name.
            let (topic, payload) = match topic {
                "$SYS/broker/retained" => (
                    "$SYS/broker/retained messages/count",
                    payload.strip_prefix("messages/count ").unwrap_or(payload),
                ),
                _ => (topic, payload),
            };
            assert!(topic.starts_with("$SYS/broker/"), "{line}");
            self.values.insert(topic.to_owned(), payload.to_owned());
        }
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.values
            .get(&format!("$SYS/broker/{name}"))
            .map(String::as_str)
    }

    fn number(&self, name: &str) -> f64 {
        self.text(name)
            .and_then(|v| v.trim_end_matches(" seconds").parse().ok())
            .unwrap_or(-1.0)
    }
}

#[test]
fn sys_topics_follow_what_clients_do() {
    let broker = Fulmar::start_with(&["--sys-interval", "1"]);
    let mut sys = SysView::new(subscribe(&broker, "$SYS/broker/#", "sys-watcher"));
    let everything = subscribe(&broker, "#", "hash-watcher");

    sys.until("the first publication", |s| {
        s.text("version")
            .is_some_and(|v| v.starts_with("fulmar version "))
            && s.number("clients/connected") >= 2.0
            && s.number("subscriptions/count") >= 2.0
    });
    let uptime = sys.number("uptime");
    let received = sys.number("publish/messages/received");
    let bytes = sys.number("bytes/received");
    assert_eq!(received, 0.0, "nothing was published yet");

    // [MQTT-4.7.2-1]: `#` does not match `$SYS/...`; the first thing the `#` subscriber
    // sees is the first ordinary message, although `$SYS` was published before it.
    mosquitto(&broker, "mosquitto_pub", &["-t", "obs/ping", "-m", "hello"]);
    assert_eq!(
        everything.next_line(TIMEOUT).as_deref(),
        Some("obs/ping hello"),
        "a `#` subscription sees no $SYS topic"
    );

    // More clients and messages: the counters follow.
    let extra = subscribe(&broker, "obs/extra", "extra");
    for i in 0..5 {
        mosquitto(
            &broker,
            "mosquitto_pub",
            &["-q", "1", "-t", "obs/extra", "-m", &i.to_string()],
        );
    }
    mosquitto(
        &broker,
        "mosquitto_pub",
        &["-r", "-t", "obs/kept", "-m", "x"],
    );
    sys.until("counters after 6 publishers and a third subscriber", |s| {
        s.number("publish/messages/received") >= received + 7.0
            && s.number("clients/connected") == 3.0
            && s.number("clients/maximum") >= 3.0
            && s.number("bytes/received") > bytes
            && s.number("publish/messages/sent") >= 6.0
            && s.number("load/publish/received/1min") > 0.0
            && s.number("load/connections/1min") > 0.0
            && s.number("uptime") > uptime
    });
    // The retained count includes the retained `$SYS` topics themselves, as Mosquitto's.
    let retained = sys.number("retained messages/count");
    assert!(retained > 40.0, "retained count {retained}");

    drop(extra);
    sys.until("a client left", |s| s.number("clients/connected") == 2.0);
    assert!(sys.number("clients/maximum") >= 3.0, "the maximum stays");
}

#[test]
fn sys_topics_can_be_turned_off() {
    let broker = Fulmar::start_with(&["--sys-interval", "0"]);
    let sys = subscribe(&broker, "$SYS/#", "sys-off");
    // Published once a second when on; nothing in two seconds means off.
    assert_eq!(sys.next_line(Duration::from_secs(2)), None);
}

#[test]
fn prometheus_endpoint_counts_over_a_real_socket() {
    let broker = Fulmar::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&broker);
    let before = scrape(addr, "/metrics");
    assert!(
        before.head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        before.head
    );
    assert!(
        before
            .head
            .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        before.head
    );
    // Every family is announced with HELP and TYPE before its samples.
    for name in [
        "fulmar_connections_accepted_total",
        "fulmar_messages_received_total",
        "fulmar_received_bytes_total",
        "fulmar_clients_connected",
    ] {
        assert!(
            before.text.contains(&format!("# HELP {name} ")),
            "HELP {name}"
        );
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            before.text.contains(&format!("# TYPE {name} {kind}\n")),
            "TYPE {name}"
        );
    }
    assert_eq!(before.get("fulmar_messages_received_total"), 0.0);

    let watcher = subscribe(&broker, "obs/metrics", "metrics-watcher");
    wait_until(TIMEOUT, || {
        scrape(addr, "/metrics").get("fulmar_clients_connected") == 1.0
    });
    for i in 0..3 {
        mosquitto(
            &broker,
            "mosquitto_pub",
            &["-q", "1", "-t", "obs/metrics", "-m", &i.to_string()],
        );
    }
    for _ in 0..3 {
        watcher
            .next_line(TIMEOUT)
            .expect("the subscriber gets each message");
    }
    // The last mosquitto_pub has exited, but the broker may not have handled its
    // DISCONNECT yet: wait for it rather than race it.
    wait_until(TIMEOUT, || {
        scrape(addr, "/metrics").get("fulmar_clients_connected") == 1.0
    });
    let after = scrape(addr, "/metrics");
    assert_eq!(after.get("fulmar_messages_received_total"), 3.0);
    assert_eq!(after.get("fulmar_messages_sent_total"), 3.0);
    assert_eq!(after.get("fulmar_clients_connected"), 1.0);
    assert_eq!(after.get("fulmar_subscriptions"), 1.0);
    assert!(after.get("fulmar_connections_accepted_total") >= 4.0);
    assert!(after.get("fulmar_connects_total") >= 4.0);
    for counter in [
        "fulmar_received_bytes_total",
        "fulmar_sent_bytes_total",
        "fulmar_packets_received_total",
    ] {
        assert!(after.get(counter) > before.get(counter), "{counter} grows");
    }
    assert_eq!(
        after.get(r#"fulmar_messages_dropped_total{reason="queue_full"}"#),
        0.0
    );
    assert!(after.get("process_resident_memory_bytes") > 0.0);

    let missing = scrape(addr, "/nothing");
    assert!(
        missing.head.starts_with("HTTP/1.1 404 "),
        "{}",
        missing.head
    );
}

#[test]
fn json_log_lines_parse() {
    let mut broker = Fulmar::start_with(&["--log-format", "json"]);
    mosquitto(
        &broker,
        "mosquitto_pub",
        &["-i", "json-client", "-t", "obs/json", "-m", "x"],
    );
    wait_until(TIMEOUT, || broker.log().contains("json-client"));
    assert!(broker.terminate().is_some_and(|s| s.success()));
    let log = broker.log();
    let mut connected = false;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(value.get(field).is_some(), "no {field} in {line}");
        }
        // Event fields sit at the top level, next to the message.
        connected |= value["message"] == "client connected" && value["client"] == "json-client";
    }
    assert!(
        connected,
        "a `client connected` line with its client field:\n{log}"
    );
}

/// A child process killed when the test ends, passed or not: a `mosquitto_pub -l` left
/// behind by a failed assertion would hold the test's output pipe open.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With the default overflow policy (backpressure), a publisher to a subscriber that stops
/// acknowledging is paused, not dropped: `/metrics` shows the stall and no drop, and once
/// the subscriber acknowledges again every message arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_shows_as_stalls_not_drops() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    let broker = Fulmar::start_with(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--set",
        "limits.max_queued_messages=10",
        "--set",
        "limits.max_inflight=5",
    ]);
    let addr = metrics_addr(&broker);

    // A QoS 1 subscriber that acknowledges only when told to (manual acks).
    let mut options = MqttOptions::new("slow-reader", "127.0.0.1", broker.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let (forward, mut publishes) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let _ = forward.send(publish);
            }
        }
    });
    client
        .subscribe("obs/slow", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let scrape_blocking = move || tokio::task::spawn_blocking(move || scrape(addr, "/metrics"));
    let deadline = Instant::now() + TIMEOUT;
    while scrape_blocking().await.unwrap().get("fulmar_subscriptions") != 1.0 {
        assert!(Instant::now() < deadline, "the subscription did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 100 QoS 1 messages: 5 in flight plus 10 queued fit, the rest must wait.
    let count = 100;
    let mut publisher = Reaped(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-q", "1", "-t", "obs/slow", "-l"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_pub"),
    );
    {
        let mut stdin = publisher.0.stdin.take().expect("piped stdin");
        let lines: String = (0..count).map(|i| format!("m{i}\n")).collect();
        stdin.write_all(lines.as_bytes()).expect("write lines");
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let metrics = scrape_blocking().await.unwrap();
        if metrics.get("fulmar_publisher_stalls_total") >= 1.0 {
            assert_eq!(
                metrics.get(r#"fulmar_messages_dropped_total{reason="queue_full"}"#),
                0.0
            );
            assert!(metrics.get("fulmar_messages_received_total") < f64::from(count));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stall seen:\n{}",
            metrics.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Acknowledge from now on: everything arrives, in order, and the publisher finishes.
    for i in 0..count {
        let publish = tokio::time::timeout(TIMEOUT, publishes.recv())
            .await
            .expect("the next message in time")
            .expect("the event loop runs");
        assert_eq!(publish.payload.as_ref(), format!("m{i}").as_bytes());
        client.ack(&publish).await.expect("ack");
    }
    let status = tokio::task::spawn_blocking(move || publisher.0.wait())
        .await
        .unwrap()
        .expect("wait for mosquitto_pub");
    assert!(status.success(), "mosquitto_pub: {status}");
    let after = scrape_blocking().await.unwrap();
    assert_eq!(
        after.get("fulmar_messages_received_total"),
        f64::from(count)
    );
    assert_eq!(
        after.get(r#"fulmar_messages_dropped_total{reason="queue_full"}"#),
        0.0
    );
    task.abort();
}

/// A hand-encoded MQTT 3.1.1 packet: the fixed header's first byte, then `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A string as MQTT writes it: a two-byte length, then the bytes.
fn mqtt_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// CONNECT (3.1.1, clean session, keep alive 60 s).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend(mqtt_string(client_id));
    packet(0x10, &body)
}

/// With `limits.qos0_backpressure = false`, QoS 0 PUBLISHes are never held back:
/// a publisher floods a subscriber that stopped reading its socket, and still gets its
/// PINGRESP within seconds, because the broker drops what that subscriber's full queue
/// cannot take, and counts it in `/metrics` and `$SYS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_overload_is_dropped_and_counted_not_queued_behind_a_stuck_subscriber() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let broker = Fulmar::start_with(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--sys-interval",
        "1",
        "--set",
        "limits.max_queued_messages=100",
        "--set",
        "limits.qos0_backpressure=false",
    ]);
    let addr = metrics_addr(&broker);
    let sys = subscribe(
        &broker,
        "$SYS/broker/publish/messages/dropped",
        "sys-dropped",
    );

    // A subscriber with a small receive buffer that reads its CONNACK and SUBACK, then
    // nothing: the kernel's buffers, then the broker's output room, then its queue fill.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stuck = socket.connect(broker.addr()).await.expect("connect");
    stuck.write_all(&connect_packet("stuck")).await.unwrap();
    let mut connack = [0; 4];
    stuck.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let mut subscribe_body = vec![0, 1];
    subscribe_body.extend(mqtt_string("flood"));
    subscribe_body.push(0);
    stuck
        .write_all(&packet(0x82, &subscribe_body))
        .await
        .unwrap();
    let mut suback = [0; 5];
    stuck.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);

    // 16 MiB of QoS 0 messages (far beyond the buffers on the way: 4 MiB of the broker's
    // socket, 256 KiB of output room, 100 queued), then a PINGREQ.
    let publisher = tokio::task::spawn_blocking({
        let to = broker.addr();
        move || {
            let started = Instant::now();
            let mut stream = TcpStream::connect(to).expect("connect the publisher");
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            stream.write_all(&connect_packet("flooder")).unwrap();
            let mut connack = [0; 4];
            stream.read_exact(&mut connack).unwrap();
            let mut body = mqtt_string("flood");
            body.extend(vec![b'x'; 1024]);
            let publish = packet(0x30, &body);
            let burst: Vec<u8> = publish.repeat(64);
            for _ in 0..256 {
                stream.write_all(&burst).expect("the broker keeps reading");
            }
            stream.write_all(&[0xC0, 0]).unwrap();
            let mut pingresp = [0; 2];
            stream
                .read_exact(&mut pingresp)
                .expect("PINGRESP while the subscriber is stuck");
            assert_eq!(pingresp, [0xD0, 0]);
            started.elapsed()
        }
    });
    let elapsed = tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("the publisher was held back")
        .unwrap();
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");

    let scrape_blocking = move || tokio::task::spawn_blocking(move || scrape(addr, "/metrics"));
    let dropped = scrape_blocking()
        .await
        .unwrap()
        .get(r#"fulmar_messages_dropped_total{reason="queue_full"}"#);
    assert!(dropped > 1000.0, "{dropped} dropped");
    // `$SYS` reports them within its interval.
    sys.expect_line(TIMEOUT, |line| {
        line.rsplit_once(' ')
            .and_then(|(_, n)| n.parse::<f64>().ok())
            .is_some_and(|n| n > 1000.0)
    });
    drop(stuck);
}
