//! `kill -9` in the middle of QoS 1 and QoS 2 streams loses nothing the broker
//! acknowledged (architecture invariant 1).
//!
//! Two MQTT 3.1.1 publishers stream numbered messages (QoS 1 on `crash/q1`, QoS 2 on
//! `crash/q2`) to two persistent sessions subscribed to `crash/#` (3.1.1 with clean session
//! 0 under `--sync batch`, 5.0 with a Session Expiry Interval under `--sync always`): one
//! connected while the streams run, one offline. The broker is killed with SIGKILL mid-stream and
//! started again on the same data directory. Then every message a publisher saw
//! acknowledged (PUBACK, or PUBREC for QoS 2: the broker owns the message from then on)
//! must reach both subscribers, first deliveries in publish order, QoS 2 ones exactly once;
//! the sessions' subscriptions must still route new messages; and a retained message set
//! just before the crash must still be there.
//!
//! The clients are small raw MQTT clients on `fulmar_core::codec` rather than a library:
//! the test must see every packet identifier and DUP flag, and must answer every PUBREL with
//! PUBCOMP (§4.3.3), also one for an identifier it already released, which a broker
//! recovering from a crash may send again.

use std::collections::{BTreeSet, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fulmar_core::codec::{
    Ack, ConnectPacket, Disconnect, List, Packet, PacketId, Properties, Property, ProtocolVersion,
    Publish, QoS, QoSPid, ReasonCode, Subscribe, Subscription, SubscriptionOptions, decode,
};
use fulmar_tests::{DataDir, Fulmar};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
/// How long any single expected thing may take. Generous: with `--sync always` every
/// input costs an fsync, which a machine busy with other I/O can stretch to tens of
/// milliseconds; an ordinary run takes 2-3 s in all.
const WAIT: Duration = Duration::from_secs(60);
/// Publications each publisher acknowledged before the broker is killed.
const KILL_AFTER: usize = 100;
/// At most this many per publisher, so the offline session's queue (1000 messages by
/// default) holds both streams: an overflow would be a limit, not a crash, losing them.
const STREAM_MAX: u16 = 450;
/// QoS 1 and 2 PUBLISHes a publisher keeps in flight.
const WINDOW: usize = 16;

/// What a raw client received, owned.
#[derive(Debug)]
enum In {
    ConnAck { session_present: bool, code: u8 },
    Publish(Received),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    SubAck,
    Other,
}

#[derive(Debug, Clone)]
struct Received {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    pid: u16,
    dup: bool,
    retain: bool,
}

/// One MQTT 3.1.1 connection over a blocking socket.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    version: ProtocolVersion,
}

impl Conn {
    /// Connects as `client_id` with MQTT 3.1.1; returns the connection and CONNACK's
    /// session present flag.
    fn open(addr: SocketAddr, client_id: &str, clean: bool) -> (Self, bool) {
        Self::open_as(addr, client_id, clean, V311)
    }

    /// Connects as `client_id` speaking `version`. A session that is not clean is kept
    /// for an hour after the connection ends in 5.0 (Session Expiry Interval), for ever in
    /// 3.1.1 (clean session 0).
    fn open_as(
        addr: SocketAddr,
        client_id: &str,
        clean: bool,
        version: ProtocolVersion,
    ) -> (Self, bool) {
        let stream = TcpStream::connect(addr).expect("connect to the broker");
        stream.set_nodelay(true).unwrap();
        let mut conn = Self {
            stream,
            buf: Vec::new(),
            version,
        };
        let expiry = [Property::SessionExpiryInterval(3600)];
        let properties = if version == ProtocolVersion::V5 && !clean {
            List::new(&expiry)
        } else {
            Properties::empty()
        };
        let connect = fulmar_core::codec::Connect {
            protocol: version,
            clean_start: clean,
            keep_alive: 0,
            properties,
            client_id,
            will: None,
            username: None,
            password: None,
        };
        conn.send(&Packet::Connect(ConnectPacket::from(&connect)))
            .expect("send CONNECT");
        match conn.recv(WAIT) {
            Ok(Some(In::ConnAck {
                session_present,
                code: 0,
            })) => (conn, session_present),
            other => panic!("{client_id}: no successful CONNACK: {other:?}"),
        }
    }

    fn send(&mut self, packet: &Packet<'_>) -> std::io::Result<()> {
        let mut out = vec![0; packet.encoded_len(self.version)];
        let n = packet.encode(self.version, &mut out).expect("encode");
        self.stream.write_all(&out[..n])
    }

    fn ack(&mut self, kind: fn(Ack<'static>) -> Packet<'static>, pid: u16) -> std::io::Result<()> {
        let pid = PacketId::new(pid).expect("non-zero packet identifier");
        self.send(&kind(Ack::new(pid)))
    }

    fn subscribe(&mut self, filter: &str) {
        let subscriptions = [Subscription::new(
            filter,
            SubscriptionOptions::qos(QoS::ExactlyOnce),
        )];
        let packet = Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Properties::empty(),
            subscriptions: List::new(&subscriptions),
        });
        self.send(&packet).expect("send SUBSCRIBE");
        match self.recv(WAIT) {
            Ok(Some(In::SubAck)) => {}
            other => panic!("no SUBACK for {filter}: {other:?}"),
        }
    }

    fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, pid: u16, retain: bool) {
        let pid = PacketId::new(pid).expect("non-zero packet identifier");
        let qos_pid = match qos {
            1 => QoSPid::AtLeastOnce(pid),
            _ => QoSPid::ExactlyOnce(pid),
        };
        let packet = Packet::Publish(Publish {
            dup: false,
            qos_pid,
            retain,
            topic,
            properties: Properties::empty(),
            payload,
        });
        // A write error shows up as the next read's error.
        let _ = self.send(&packet);
    }

    fn disconnect(mut self) {
        let _ = self.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
    }

    /// The next packet within `timeout`: `Ok(None)` when none came, `Err` when the
    /// connection is gone.
    fn recv(&mut self, timeout: Duration) -> std::io::Result<Option<In>> {
        let deadline = Instant::now() + timeout;
        loop {
            match decode(&self.buf, self.version, 1 << 20) {
                Ok((packet, used)) => {
                    let packet = own(&packet);
                    self.buf.drain(..used);
                    return Ok(Some(packet));
                }
                Err(fulmar_core::codec::DecodeError::Incomplete { .. }) => {}
                Err(error) => panic!("the broker sent a malformed packet: {error:?}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn own(packet: &Packet<'_>) -> In {
    let id = |a: &Ack<'_>| a.packet_id.get();
    match packet {
        Packet::ConnAck(c) => In::ConnAck {
            session_present: c.session_present,
            code: c.reason_code as u8,
        },
        Packet::Publish(p) => {
            let (qos, pid) = match p.qos_pid {
                QoSPid::AtMostOnce => (0, 0),
                QoSPid::AtLeastOnce(pid) => (1, pid.get()),
                QoSPid::ExactlyOnce(pid) => (2, pid.get()),
            };
            In::Publish(Received {
                topic: p.topic.to_owned(),
                payload: p.payload.to_vec(),
                qos,
                pid,
                dup: p.dup,
                retain: p.retain,
            })
        }
        Packet::PubAck(a) => In::PubAck(id(a)),
        Packet::PubRec(a) => In::PubRec(id(a)),
        Packet::PubRel(a) => In::PubRel(id(a)),
        Packet::PubComp(a) => In::PubComp(id(a)),
        Packet::SubAck(_) => In::SubAck,
        _ => In::Other,
    }
}

/// A persistent subscriber: the client side of its session outlives its connections.
#[derive(Debug)]
struct Subscriber {
    id: String,
    version: ProtocolVersion,
    /// QoS 2 packet identifiers received and not released yet: a PUBLISH with one of them
    /// is the broker re-sending, not a new message ([MQTT-4.3.3-10], method B).
    unreleased: HashSet<u16>,
    /// Every new delivery, in arrival order: (topic, sequence number).
    deliveries: Vec<(String, u32)>,
}

impl Subscriber {
    fn new(id: &str, version: ProtocolVersion) -> Self {
        Self {
            id: id.to_owned(),
            version,
            unreleased: HashSet::new(),
            deliveries: Vec::new(),
        }
    }

    /// Connects to its session (never clean); returns CONNACK's session present flag.
    fn connect(&self, addr: SocketAddr) -> (Conn, bool) {
        Conn::open_as(addr, &self.id, false, self.version)
    }

    /// Handles one packet; returns whether the connection still works.
    fn handle(&mut self, conn: &mut Conn, packet: In) -> bool {
        match packet {
            In::Publish(p) => {
                let seq = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or_else(|| panic!("{}: unexpected payload {p:?}", self.id));
                let new = p.qos < 2 || self.unreleased.insert(p.pid);
                if new {
                    self.deliveries.push((p.topic.clone(), seq));
                } else {
                    assert!(
                        p.dup,
                        "{}: a second QoS 2 PUBLISH without DUP: {p:?}",
                        self.id
                    );
                }
                let reply = match p.qos {
                    1 => conn.ack(Packet::PubAck, p.pid),
                    2 => conn.ack(Packet::PubRec, p.pid),
                    _ => Ok(()),
                };
                reply.is_ok()
            }
            In::PubRel(pid) => {
                self.unreleased.remove(&pid);
                conn.ack(Packet::PubComp, pid).is_ok()
            }
            _ => true,
        }
    }

    /// Receives until the connection fails (the broker was killed).
    fn until_closed(&mut self, mut conn: Conn) {
        loop {
            match conn.recv(WAIT) {
                Ok(Some(packet)) => {
                    if !self.handle(&mut conn, packet) {
                        return;
                    }
                }
                Ok(None) => panic!("{}: the broker went quiet but was not killed", self.id),
                Err(_) => return,
            }
        }
    }

    /// Receives until every wanted delivery arrived and nothing more came for a moment.
    fn until_has(&mut self, conn: &mut Conn, wanted: &[(String, u32)]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let have: HashSet<&(String, u32)> = self.deliveries.iter().collect();
            let complete = wanted.iter().all(|w| have.contains(w));
            let quiet = if complete {
                Duration::from_millis(300)
            } else {
                Duration::from_millis(100)
            };
            match conn.recv(quiet) {
                Ok(Some(packet)) => {
                    assert!(
                        self.handle(conn, packet),
                        "{}: connection lost after the restart",
                        self.id
                    );
                }
                Ok(None) if complete => return,
                Ok(None) => {}
                Err(e) => panic!("{}: connection lost after the restart: {e}", self.id),
            }
            if Instant::now() > deadline {
                let have: HashSet<&(String, u32)> = self.deliveries.iter().collect();
                let missing: Vec<_> = wanted.iter().filter(|w| !have.contains(w)).collect();
                panic!(
                    "{}: acknowledged messages never arrived: {missing:?}",
                    self.id
                );
            }
        }
    }

    /// Checks the deliveries of `topic` against what its publisher saw acknowledged.
    fn check(&self, topic: &str, acked: &[u32], exactly_once: bool) {
        let seqs: Vec<u32> = self
            .deliveries
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, s)| *s)
            .collect();
        let mut seen = BTreeSet::new();
        let mut last = 0;
        for &seq in &seqs {
            if seen.insert(seq) {
                assert!(
                    seq > last,
                    "{}: {topic} {seq} first delivered after {last}: {seqs:?}",
                    self.id
                );
                last = seq;
            } else {
                assert!(
                    !exactly_once,
                    "{}: QoS 2 message {topic} {seq} delivered twice",
                    self.id
                );
            }
        }
        let missing: Vec<u32> = acked
            .iter()
            .filter(|s| !seen.contains(s))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "{}: acknowledged {topic} messages lost: {missing:?}",
            self.id
        );
    }
}

/// Publishes `1..=STREAM_MAX` on `topic` with up to [`WINDOW`] in flight until the
/// connection fails; returns the sequence numbers the broker acknowledged (PUBACK, or
/// PUBREC for QoS 2) and counts them in `count` as they come.
fn stream(addr: SocketAddr, topic: &'static str, qos: u8, count: Arc<AtomicUsize>) -> Vec<u32> {
    let (mut conn, _) = Conn::open(addr, &format!("crash-pub-{qos}"), true);
    let mut acked = Vec::new();
    // QoS 2 identifiers released (PUBREL sent) and not completed yet.
    let mut released = HashSet::new();
    let mut in_flight = 0;
    let mut next: u16 = 1;
    loop {
        while in_flight < WINDOW && next <= STREAM_MAX {
            // The packet identifier is the sequence number: no identifier is reused.
            conn.publish(topic, next.to_string().as_bytes(), qos, next, false);
            next += 1;
            in_flight += 1;
        }
        let packet = match conn.recv(WAIT) {
            Ok(Some(packet)) => packet,
            Ok(None) if next > STREAM_MAX && in_flight == 0 => return acked,
            Ok(None) => panic!("{topic}: no acknowledgement within {WAIT:?}"),
            Err(_) => return acked,
        };
        match packet {
            In::PubAck(pid) => {
                in_flight -= 1;
                acked.push(u32::from(pid));
            }
            In::PubRec(pid) => {
                acked.push(u32::from(pid));
                released.insert(pid);
                if conn.ack(Packet::PubRel, pid).is_err() {
                    return acked;
                }
            }
            In::PubComp(pid) => {
                assert!(
                    released.remove(&pid),
                    "{topic}: PUBCOMP {pid} for no PUBREL"
                );
                in_flight -= 1;
            }
            other => panic!("{topic}: unexpected {other:?}"),
        }
        count.store(acked.len(), Ordering::SeqCst);
        if next > STREAM_MAX && in_flight == 0 {
            return acked;
        }
    }
}

/// Publishes one QoS 1 message and waits for its PUBACK.
fn publish_acked(addr: SocketAddr, client_id: &str, topic: &str, payload: &[u8], retain: bool) {
    let (mut conn, _) = Conn::open(addr, client_id, true);
    conn.publish(topic, payload, 1, 1, retain);
    match conn.recv(WAIT) {
        Ok(Some(In::PubAck(1))) => conn.disconnect(),
        other => panic!("no PUBACK for {topic}: {other:?}"),
    }
}

fn wanted(topic: &str, seqs: &[u32]) -> Vec<(String, u32)> {
    seqs.iter().map(|s| (topic.to_owned(), *s)).collect()
}

/// How the broker is stopped mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful stop, which must exit 0.
    Term,
}

/// Runs the whole scenario with `--sync policy`, the subscribers speaking `version`, the
/// broker stopped by `stop` and started with `extra` arguments both times.
fn crash_loses_nothing_acknowledged(
    sync: &str,
    version: ProtocolVersion,
    stop: Stop,
    extra: &[&str],
) {
    let data = DataDir::new("crash");
    let args = [&["--data-dir", data.arg(), "--sync", sync], extra].concat();
    let mut broker = Fulmar::start_with(&args);
    let addr = broker.addr();

    // The offline subscriber's session: subscribed, then gone while the streams run.
    let mut offline = Subscriber::new("crash-offline", version);
    let (mut conn, present) = offline.connect(addr);
    assert!(!present);
    conn.subscribe("crash/#");
    conn.disconnect();

    let mut online = Subscriber::new("crash-online", version);
    let (mut conn, _) = online.connect(addr);
    conn.subscribe("crash/#");
    let online_task = thread::spawn(move || {
        online.until_closed(conn);
        online
    });

    // Retained just before the crash: its PUBACK promises it is stored.
    publish_acked(addr, "crash-retainer", "retained/crash", b"7", true);

    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let q1 = {
        let count = counts[0].clone();
        thread::spawn(move || stream(addr, "crash/q1", 1, count))
    };
    let q2 = {
        let count = counts[1].clone();
        thread::spawn(move || stream(addr, "crash/q2", 2, count))
    };
    let deadline = Instant::now() + WAIT;
    while counts.iter().any(|c| c.load(Ordering::SeqCst) < KILL_AFTER) {
        assert!(Instant::now() < deadline, "the streams did not get going");
        thread::sleep(Duration::from_millis(1));
    }
    match stop {
        Stop::Kill => broker.kill(),
        Stop::Term => {
            let status = broker.terminate().expect("fulmar exits after SIGTERM");
            assert!(status.success(), "{status:?}");
        }
    }
    let acked_q1 = q1.join().expect("QoS 1 publisher");
    let acked_q2 = q2.join().expect("QoS 2 publisher");
    let mut online = online_task.join().expect("online subscriber");
    eprintln!(
        "stopped ({stop:?}) with {} QoS 1 and {} QoS 2 messages acknowledged (of {STREAM_MAX} each); the \
         online subscriber had {} deliveries",
        acked_q1.len(),
        acked_q2.len(),
        online.deliveries.len()
    );
    assert!(
        acked_q1.len() < usize::from(STREAM_MAX) || acked_q2.len() < usize::from(STREAM_MAX),
        "the streams ended before the stop: nothing was mid-stream"
    );
    drop(broker);

    let broker = Fulmar::start_with(&args);
    let addr = broker.addr();
    let mut all = wanted("crash/q1", &acked_q1);
    all.extend(wanted("crash/q2", &acked_q2));

    // The online subscriber comes back to its session and gets the rest.
    let (mut conn, present) = online.connect(addr);
    assert!(present, "{}: session lost", online.id);
    online.until_has(&mut conn, &all);
    // Its subscription survived: a message published after the restart arrives, without
    // a new SUBSCRIBE.
    publish_acked(addr, "crash-after", "crash/after", b"1", false);
    let after = wanted("crash/after", &[1]);
    online.until_has(&mut conn, &after);
    conn.disconnect();

    let (mut conn, present) = offline.connect(addr);
    assert!(present, "{}: session lost", offline.id);
    all.extend(after);
    offline.until_has(&mut conn, &all);
    conn.disconnect();

    for subscriber in [&online, &offline] {
        subscriber.check("crash/q1", &acked_q1, false);
        subscriber.check("crash/q2", &acked_q2, true);
    }

    // The retained message survived.
    let (mut conn, _) = Conn::open(addr, "crash-late", true);
    let subscriptions = [Subscription::new(
        "retained/crash",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
    )];
    conn.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::empty(),
        subscriptions: List::new(&subscriptions),
    }))
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let p = loop {
        assert!(Instant::now() < deadline, "the retained message is gone");
        if let Ok(Some(In::Publish(p))) = conn.recv(WAIT) {
            break p;
        }
    };
    assert!(p.retain && p.payload == b"7", "{p:?}");
}

#[test]
fn kill_9_loses_nothing_acknowledged_with_group_commit() {
    crash_loses_nothing_acknowledged("batch", V311, Stop::Kill, &[]);
}

#[test]
fn kill_9_loses_nothing_acknowledged_with_a_sync_per_input_to_v5_sessions() {
    crash_loses_nothing_acknowledged("always", ProtocolVersion::V5, Stop::Kill, &[]);
}

/// With three broker shards the publishers (`crash-pub-*`, shard 1) and the subscribers
/// (`crash-offline`, shard 0; `crash-online`, shard 2) meet on no shard: every message
/// crosses shards, and SIGTERM reaches the shards one after the other. A stopping shard
/// keeps taking the others' copies until they are all taken, and an acknowledgement
/// whose copies were not taken is not sent.
#[test]
fn sigterm_across_shards_loses_nothing_acknowledged() {
    crash_loses_nothing_acknowledged("batch", V311, Stop::Term, &["--set", "runtime.shards=3"]);
}

/// With `--sync none` nothing is made durable while running (for up to a second), so a
/// message acknowledged a moment before SIGTERM survives only if the graceful stop closes
/// the store (last durable commit) before the process exits.
#[test]
fn sigterm_commits_what_sync_none_had_not() {
    let data = DataDir::new("sigterm");
    let args = ["--data-dir", data.arg(), "--sync", "none"];
    let mut broker = Fulmar::start_with(&args);
    publish_acked(
        broker.addr(),
        "sigterm-retainer",
        "retained/sigterm",
        b"42",
        true,
    );
    let status = broker.terminate().expect("fulmar exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(broker);

    let broker = Fulmar::start_with(&args);
    let (mut conn, _) = Conn::open(broker.addr(), "sigterm-late", true);
    conn.subscribe("retained/sigterm");
    match conn.recv(WAIT) {
        Ok(Some(In::Publish(p))) => assert!(p.retain && p.payload == b"42", "{p:?}"),
        other => panic!("the retained message did not survive SIGTERM: {other:?}"),
    }
}
