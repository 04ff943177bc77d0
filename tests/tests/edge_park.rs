//! Idle plain-TCP connections park (`runtime.park_after_ms`, here 200 ms): they give up
//! their task and wait as a socket in the broker's parking lot. A client must not notice:
//! parked connections still get what is published to them (QoS 0 and 1), answer PINGREQ,
//! are closed when their keep-alive expires (will published), have their will published
//! when the client goes away, and get the v5 DISCONNECT 0x8B on SIGTERM. `/metrics`
//! (`fulmar_connections_parked`) shows that they were parked each time.
//!
//! The clients speak raw MQTT over std sockets, so the test knows exactly when each one
//! is silent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use fulmar_tests::{Fulmar, fulmar_bin, metrics_addr, mosquitto_sub, next_message, wait_until};

/// How long any packet or state may take to show.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn parked_connections_behave_as_connected_ones() {
    parked_connections_behave("1");
}

/// With shards, a connection parks on the shard its client identifier placed it on.
#[test]
fn parked_connections_behave_with_two_shards() {
    parked_connections_behave("2");
}

fn parked_connections_behave(shards: &str) {
    let (mut broker, metrics) = start("200", shards);
    let wills = mosquitto_sub(broker.port(), &["-t", "wills/#", "-q", "1", "-v"]);

    let mut sub = connect(&broker, "parked-sub", 60, None, 4);
    send(&mut sub, &subscribe("park/#"));
    assert_eq!(read_packet(&mut sub).0 >> 4, 9, "SUBACK");
    let closer = connect(&broker, "closer", 60, Some(("wills/closer", "gone")), 4);
    let mut v5 = connect(&broker, "v5", 60, None, 5);
    // Everyone parks: the three above and the will watcher.
    wait_until(WAIT, || parked(metrics) >= 4);

    // QoS 1 and QoS 0 to a parked subscriber.
    publish(&broker, "park/a", "one", "1");
    let (header, body) = read_packet(&mut sub);
    assert_eq!(header >> 4, 3, "PUBLISH");
    assert_eq!((header >> 1) & 3, 1, "QoS 1");
    assert!(body.ends_with(b"one"), "{body:?}");
    // PUBACK with the packet identifier after the topic.
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let id = &body[2 + topic_len..4 + topic_len];
    send(&mut sub, &[0x40, 2, id[0], id[1]]);
    wait_until(WAIT, || parked(metrics) >= 4);
    publish(&broker, "park/b", "two", "0");
    let (header, body) = read_packet(&mut sub);
    assert_eq!(header, 0x30, "PUBLISH QoS 0");
    assert!(body.ends_with(b"two"), "{body:?}");

    // PINGREQ from a parked connection.
    wait_until(WAIT, || parked(metrics) >= 4);
    send(&mut sub, &[0xC0, 0]);
    assert_eq!(read_packet(&mut sub), (0xD0, Vec::new()), "PINGRESP");

    // Keep alive 1 s: once parked, and silent for 1.5 s, the connection is closed
    // (3.1.1 §3.1.2.10: one and a half times the keep alive) and its will published.
    let mut expiring = connect(&broker, "expiring", 1, Some(("wills/ka", "expired")), 4);
    wait_until(WAIT, || parked(metrics) >= 5);

    // The client of a parked connection goes away: its will is published.
    drop(closer);
    assert_eq!(next_message(&wills), "wills/closer gone");

    let mut rest = Vec::new();
    assert_eq!(
        expiring.read_to_end(&mut rest).ok(),
        Some(0),
        "closed by the broker"
    );
    assert_eq!(next_message(&wills), "wills/ka expired");

    // SIGTERM: the parked v5 connection is told why: 0x8B, Server shutting down.
    wait_until(WAIT, || parked(metrics) >= 3);
    broker.terminate().expect("fulmar exits after SIGTERM");
    let (header, body) = read_packet(&mut v5);
    assert_eq!(header, 0xE0, "DISCONNECT");
    assert_eq!(body.first(), Some(&0x8B), "{body:02x?}");
}

/// With connections parking after 20 ms, a publisher that pauses between bursts and its
/// subscriber park and come back again and again: every message arrives, once and in
/// order (no byte or wake-up lost on the way in or out of the lot).
#[test]
fn messages_cross_parking_and_unparking_in_order() {
    let (broker, metrics) = start("20", "1");
    let sub = mosquitto_sub(broker.port(), &["-t", "cross/#", "-q", "1"]);
    let mut publisher = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", "cross/a", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run mosquitto_pub");
    let mut stdin = publisher.stdin.take().expect("piped stdin");
    let mut parks = 0;
    for burst in 0..20 {
        for i in 0..5 {
            writeln!(stdin, "{}", burst * 5 + i).expect("write to mosquitto_pub");
        }
        stdin.flush().expect("flush");
        // Pauses around the 20 ms threshold (and its 5 ms ticks), so that each side parks
        // at some point of the exchange, or just as something comes.
        std::thread::sleep(Duration::from_millis(10 + 7 * (burst % 6)));
        parks = parks.max(parked(metrics));
    }
    drop(stdin);
    assert!(publisher.wait().expect("mosquitto_pub ends").success());
    for n in 0..100 {
        assert_eq!(next_message(&sub), n.to_string());
    }
    assert!(parks >= 1, "nothing parked during the exchange");
}

/// A new connection parks at its first idle moment after its CONNACK, whatever
/// `park_after_ms` (here a minute); once it has parked, only after `park_after_ms`.
#[test]
fn a_new_connection_parks_once_answered_then_after_the_threshold() {
    let (broker, metrics) = start("60000", "1");
    let mut client = connect(&broker, "fresh", 60, None, 4);
    wait_until(WAIT, || parked(metrics) == 1);
    send(&mut client, &[0xC0, 0]);
    assert_eq!(read_packet(&mut client), (0xD0, Vec::new()), "PINGRESP");
    // Back from the lot for the PINGREQ, it stays: a minute has not passed.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(parked(metrics), 0);
}

/// A broker whose connections park after `park_after_ms`, with `shards`, and the address
/// of its metrics endpoint.
fn start(park_after_ms: &str, shards: &str) -> (Fulmar, SocketAddr) {
    let mut command = Command::new(fulmar_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--log", "debug"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("FULMAR_RUNTIME__PARK_AFTER_MS", park_after_ms)
        .env("FULMAR_RUNTIME__SHARDS", shards);
    let broker = Fulmar::start_command(command);
    let metrics = metrics_addr(&broker);
    (broker, metrics)
}

/// A client connected over raw TCP with `keep_alive` seconds and an optional will (QoS 1),
/// at protocol level `level` (4: 3.1.1, 5: 5.0), once its CONNACK accepts it.
fn connect(
    broker: &Fulmar,
    id: &str,
    keep_alive: u16,
    will: Option<(&str, &str)>,
    level: u8,
) -> TcpStream {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level];
    // Clean session/start; with a will: will flag and will QoS 1.
    body.push(if will.is_some() { 0x0E } else { 0x02 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    string(&mut body, id);
    if let Some((topic, message)) = will {
        if level == 5 {
            body.push(0); // no will properties
        }
        string(&mut body, topic);
        string(&mut body, message);
    }
    let mut stream = TcpStream::connect(broker.addr()).expect("connect to fulmar");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    send(&mut stream, &packet(0x10, &body));
    let (header, connack) = read_packet(&mut stream);
    assert_eq!(header, 0x20, "CONNACK");
    assert_eq!(connack.get(1), Some(&0), "accepted: {connack:?}");
    stream
}

/// A SUBSCRIBE (3.1.1) to `filter` at QoS 1.
fn subscribe(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    string(&mut body, filter);
    body.push(1);
    packet(0x82, &body)
}

/// `mosquitto_pub` of `message` to `topic` at `qos`.
fn publish(broker: &Fulmar, topic: &str, message: &str, qos: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", topic, "-m", message, "-q", qos])
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success());
}

fn string(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("short string");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A packet: its first byte, remaining length and `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = u8::try_from(len % 128).expect("seven bits");
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("write to fulmar");
}

/// The next packet: its first byte and its body.
fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut byte = [0; 1];
    stream.read_exact(&mut byte).expect("a packet from fulmar");
    let first = byte[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte).expect("remaining length");
        len |= usize::from(byte[0] & 0x7F) << shift;
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).expect("packet body");
    (first, body)
}

/// `fulmar_connections_parked` now.
fn parked(metrics: SocketAddr) -> u64 {
    let mut stream = TcpStream::connect(metrics).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: fulmar\r\nConnection: close\r\n\r\n")
        .expect("ask /metrics");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .find_map(|line| line.strip_prefix("fulmar_connections_parked "))
        .and_then(|n| n.trim().parse().ok())
        .expect("fulmar_connections_parked in /metrics")
}
