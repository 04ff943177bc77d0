//! Hostile input against the real `fulmar` binary: garbage bytes, malformed variable byte
//! integers, oversized declared lengths, a second CONNECT, PUBLISH before CONNECT, an
//! invalid UTF-8 topic, and 500 sockets that never send CONNECT.
//!
//! Each case checks two things a user can see:
//! - the hostile connection is closed, and where MQTT 5.0 lets the server say why (a
//!   DISCONNECT once the client is connected) the reason code is the one the spec asks for;
//! - the broker is unharmed ([`Stored`]): a QoS 1 message queued for an offline persistent
//!   session before the attack is delivered after it, a retained message set before is
//!   still there, and mosquitto clients are served as usual.
//!
//! Every read is bounded ([`CLOSE_TIMEOUT`]), so a broker that stops answering fails the
//! test instead of hanging it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use fulmar_tests::Fulmar;

/// How long a hostile socket may stay open after its offence (for the half-open sockets:
/// the CONNECT timeout the test sets, plus ample slack for a loaded CI machine).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// v5 reason codes the broker must send ([MQTT-4.13.2-1], 5.0 §2.4).
const MALFORMED_PACKET: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const PACKET_TOO_LARGE: u8 = 0x95;

/// A message stored before an attack that must survive it: a QoS 1 message queued for the
/// offline persistent session `keeper-{name}`, and a retained message.
struct Stored<'a> {
    broker: &'a Fulmar,
    name: String,
}

impl<'a> Stored<'a> {
    /// Creates the persistent session (subscribed, then offline) and the retained message.
    fn new(broker: &'a Fulmar, name: &str) -> Self {
        let stored = Self {
            broker,
            name: name.to_owned(),
        };
        let queue = stored.queue_topic();
        let keeper = stored.keeper();
        mosquitto(
            broker,
            "mosquitto_sub",
            &["-c", "-i", &keeper, "-q", "1", "-t", &queue, "-E"],
        );
        mosquitto(
            broker,
            "mosquitto_pub",
            &[
                "-r",
                "-q",
                "1",
                "-t",
                &stored.retained_topic(),
                "-m",
                "kept",
            ],
        );
        stored
    }

    fn queue_topic(&self) -> String {
        format!("hostile/{}/queue", self.name)
    }

    fn retained_topic(&self) -> String {
        format!("hostile/{}/retained", self.name)
    }

    fn keeper(&self) -> String {
        format!("keeper-{}", self.name)
    }

    /// Queues `payload` (QoS 1) for the offline session.
    fn queue(&self, payload: &str) {
        mosquitto(
            self.broker,
            "mosquitto_pub",
            &["-q", "1", "-t", &self.queue_topic(), "-m", payload],
        );
    }

    /// The session gets `payload`, then goes offline again; a new subscriber gets the
    /// retained message.
    fn check(&self, payload: &str) {
        let queued = mosquitto(
            self.broker,
            "mosquitto_sub",
            &[
                "-c",
                "-i",
                &self.keeper(),
                "-q",
                "1",
                "-t",
                &self.queue_topic(),
                "-C",
                "1",
                "-W",
                "5",
            ],
        );
        assert_eq!(queued.trim_end(), payload, "the queued QoS 1 message");
        let retained = mosquitto(
            self.broker,
            "mosquitto_sub",
            &["-t", &self.retained_topic(), "-C", "1", "-W", "5"],
        );
        assert_eq!(retained.trim_end(), "kept", "the retained message");
    }

    /// Runs `attack` between queueing a message and checking that it and the retained
    /// message are still delivered.
    fn survives(&self, round: &str, attack: impl FnOnce()) {
        self.queue(round);
        attack();
        self.check(round);
    }
}

/// Runs a mosquitto client against the broker (it must succeed) and returns its output.
fn mosquitto(broker: &Fulmar, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A raw TCP connection to the broker.
fn raw(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// A remaining length as a variable byte integer (5.0 §1.5.5).
fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A packet: first byte, remaining length, body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// CONNECT for `level` (4 = 3.1.1, 5 = 5.0), clean start, keep alive 60 s.
fn connect(level: u8, client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    packet(0x10, &body)
}

/// A QoS 0 PUBLISH with raw topic bytes (5.0 when `v5`: an empty property list).
fn publish(topic: &[u8], payload: &[u8], v5: bool) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// Connects with MQTT `level` and reads the CONNACK, which must accept the client.
fn connected(addr: SocketAddr, level: u8, client_id: &str) -> TcpStream {
    let mut stream = raw(addr);
    stream
        .write_all(&connect(level, client_id))
        .expect("send CONNECT");
    stream
        .set_read_timeout(Some(CLOSE_TIMEOUT))
        .expect("read timeout");
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("CONNACK header");
    assert_eq!(head[0], 0x20, "CONNACK expected, got {head:?}");
    let mut body = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut body).expect("CONNACK body");
    assert_eq!(
        body.get(1),
        Some(&0),
        "CONNACK refused the client: {body:?}"
    );
    stream
}

/// Reads until the broker closes the connection and returns everything it sent. A reset
/// counts as closed (the broker may close with our bytes unread).
///
/// # Panics
/// If the connection is still open after [`CLOSE_TIMEOUT`].
fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the broker kept the hostile connection open"
        );
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the broker kept the hostile connection open for {CLOSE_TIMEOUT:?}")
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Sends `bytes` on a fresh connection that never sent CONNECT: the broker must close it
/// without a word (a server sends CONNACK only in answer to a CONNECT, [MQTT-3.1.0-1]).
fn refused_before_connect(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = raw(addr);
    // The broker may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(bytes);
    let answer = until_closed(&mut stream);
    assert!(
        answer.is_empty(),
        "nothing is owed before CONNECT, got {answer:02x?}"
    );
}

/// Sends `bytes` after a 5.0 CONNECT was accepted: the broker must answer with DISCONNECT
/// carrying `reason` and close.
fn disconnected_v5(addr: SocketAddr, client_id: &str, bytes: &[u8], reason: u8) {
    let mut stream = connected(addr, 5, client_id);
    let _ = stream.write_all(bytes);
    let answer = until_closed(&mut stream);
    assert!(
        answer.first() == Some(&0xE0) && answer.get(2) == Some(&reason),
        "expected DISCONNECT with reason {reason:#04x}, got {answer:02x?}"
    );
}

/// Sends `bytes` after a 3.1.1 CONNECT was accepted: 3.1.1 has no server DISCONNECT, so the
/// broker closes the connection without a word.
fn closed_v311(addr: SocketAddr, client_id: &str, bytes: &[u8]) {
    let mut stream = connected(addr, 4, client_id);
    let _ = stream.write_all(bytes);
    let answer = until_closed(&mut stream);
    assert!(
        answer.is_empty(),
        "3.1.1 closes silently, got {answer:02x?}"
    );
}

#[test]
fn garbage_bytes() {
    let broker = Fulmar::start();
    let stored = Stored::new(&broker, "garbage");
    stored.survives("after-http", || {
        refused_before_connect(broker.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    });
    stored.survives("after-noise", || {
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        refused_before_connect(broker.addr(), &noise);
    });
    // Packet type 0 and 15 with wrong flags once connected: malformed.
    stored.survives("after-reserved-type", || {
        disconnected_v5(broker.addr(), "garbage-v5", &[0x00, 0x00], MALFORMED_PACKET);
    });
}

#[test]
fn malformed_remaining_length() {
    let broker = Fulmar::start();
    let stored = Stored::new(&broker, "varint");
    // Five bytes of remaining length: at most four are allowed (5.0 §1.5.5).
    let five = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    stored.survives("varint-before-connect", || {
        refused_before_connect(broker.addr(), &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    });
    stored.survives("varint-v5", || {
        disconnected_v5(broker.addr(), "varint-v5", &five, MALFORMED_PACKET);
    });
    stored.survives("varint-v311", || {
        closed_v311(broker.addr(), "varint-v311", &five)
    });
}

#[test]
fn oversized_declared_length() {
    let broker = Fulmar::start_with(&["--max-packet-size", "65536"]);
    let stored = Stored::new(&broker, "oversized");
    // A PUBLISH announcing 200 MB (a valid length, far above the maximum packet size):
    // refused from its fixed header, without waiting for the body.
    let mut huge = vec![0x30];
    varint(200 * 1024 * 1024, &mut huge);
    huge.extend_from_slice(&[0, 1, b't']);
    stored.survives("oversized-v5", || {
        disconnected_v5(broker.addr(), "oversized-v5", &huge, PACKET_TOO_LARGE);
    });
    stored.survives("oversized-v311", || {
        closed_v311(broker.addr(), "oversized-v311", &huge)
    });
    // The same length on a CONNECT, before any client is known.
    let mut connect_huge = vec![0x10];
    varint(200 * 1024 * 1024, &mut connect_huge);
    stored.survives("oversized-connect", || {
        refused_before_connect(broker.addr(), &connect_huge);
    });
}

#[test]
fn second_connect() {
    let broker = Fulmar::start();
    let stored = Stored::new(&broker, "second");
    // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
    stored.survives("second-v5", || {
        disconnected_v5(
            broker.addr(),
            "second-v5",
            &connect(5, "second-v5"),
            PROTOCOL_ERROR,
        );
    });
    stored.survives("second-v311", || {
        closed_v311(broker.addr(), "second-v311", &connect(4, "second-v311"));
    });
}

#[test]
fn publish_before_connect() {
    let broker = Fulmar::start();
    let stored = Stored::new(&broker, "early");
    let topic = stored.queue_topic();
    stored.survives("early-publish", || {
        // [MQTT-3.1.0-1]: the first packet must be CONNECT.
        refused_before_connect(broker.addr(), &publish(topic.as_bytes(), b"sneaky", false));
    });
    // The refused PUBLISH was not routed: the session gets exactly the round's message,
    // and nothing else is queued behind it.
    stored.survives("after-early-publish", || {});
}

#[test]
fn invalid_utf8_topic() {
    let broker = Fulmar::start();
    let stored = Stored::new(&broker, "utf8");
    // 0xC3 0x28 is not UTF-8; a topic must be well-formed UTF-8 ([MQTT-1.5.4-1]), and a
    // packet that is not is malformed.
    let bad = publish(&[b'h', b'/', 0xC3, 0x28], b"x", true);
    stored.survives("utf8-v5", || {
        disconnected_v5(broker.addr(), "utf8-v5", &bad, MALFORMED_PACKET);
    });
    let bad = publish(&[b'h', b'/', 0xC3, 0x28], b"x", false);
    stored.survives("utf8-v311", || {
        closed_v311(broker.addr(), "utf8-v311", &bad)
    });
    // A null character is forbidden too ([MQTT-1.5.4-2]).
    let nul = publish(b"h/\0", b"x", true);
    stored.survives("nul-v5", || {
        disconnected_v5(broker.addr(), "nul-v5", &nul, MALFORMED_PACKET);
    });
}

#[test]
fn half_open_sockets_are_closed_by_the_connect_timeout() {
    // A short CONNECT timeout keeps the test fast; the default (10 s) works the same way.
    let broker = Fulmar::start_with(&["--set", "limits.connect_timeout_secs=2"]);
    let stored = Stored::new(&broker, "idle");
    let mut idle: Vec<TcpStream> = Vec::new();
    stored.survives("while-idle", || {
        idle = (0..500).map(|_| raw(broker.addr())).collect();
    });
    // Still served while they hang around, by a new client as well.
    let _ = connected(broker.addr(), 5, "beside-the-idle");
    // None of them sent CONNECT: the broker closes each once its CONNECT timeout passes.
    for stream in &mut idle {
        let answer = until_closed(stream);
        assert!(
            answer.is_empty(),
            "nothing is owed before CONNECT, got {answer:02x?}"
        );
    }
    stored.survives("after-idle", || {});
}
