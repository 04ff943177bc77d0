//! Fuzzes the broker state machine with arbitrary sequences of operations from several
//! connections: well-formed CONNECT / SUBSCRIBE / PUBLISH / acknowledgments mixed with raw
//! bytes, abrupt closes and jumps in time, on a fixed-capacity broker (tiny limits, so
//! every "full" path runs) and a growable one.
//!
//! Invariants checked after every operation:
//! - nothing panics (`Broker` promises no panic on any input sequence);
//! - everything `poll_transmit` writes decodes as server packets in the connection's
//!   version, and never exceeds the buffer it was given; a buffer too small for the next
//!   packet gets `InsufficientSize` asking for more than it has, and once grown to that
//!   size the packet fits (nothing is dropped or stalls);
//! - `Event::Connected` and `Event::Resume` name a connection the host holds, and a
//!   resumed connection is no longer stalled;
//! - `poll_event` drains: a bounded number of events per operation;
//! - `handle_timeout(poll_timeout())` moves the deadline forward (no timer that never
//!   clears);
//! - the broker's own counters stay consistent (connected clients never exceed open
//!   connections).

#![no_main]

use arbitrary::Arbitrary;
use fulmar_core::broker::{Broker, BrokerStorage, Config, ConnectionId, Event, Growable};
use fulmar_core::codec::{
    Ack, Connect, List, Packet, PacketId, Properties, Property, ProtocolVersion, Publish, QoS,
    QoSPid, Subscribe, Subscription, SubscriptionOptions, Will, decode,
};
use fulmar_core::time::{Duration, Instant};
use fulmar_core_fuzz::host::{Tiny, config, decode_stream, transmit};
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 5] = ["a", "a/b", "$SYS/x", "b/c/d", "a/b/c"];
const FILTERS: [&str; 6] = ["a/#", "+/b", "#", "$share/g/a/+", "a/b", "b/+/d"];

#[derive(Arbitrary, Debug)]
enum Op {
    Open,
    Connect {
        conn: u8,
        version: u8,
        clean: bool,
        keep_alive: u8,
        id: u8,
        will: bool,
        expiry: u8,
        alias_max: u8,
    },
    Subscribe {
        conn: u8,
        filter: u8,
        qos: u8,
        no_local: bool,
        id: u8,
    },
    Publish {
        conn: u8,
        topic: u8,
        qos: u8,
        retain: bool,
        len: u8,
        expiry: u8,
        alias: u8,
    },
    AckAll {
        conn: u8,
    },
    Raw {
        conn: u8,
        bytes: Vec<u8>,
    },
    Drop {
        conn: u8,
    },
    Advance {
        seconds: u16,
    },
    Persist,
}

struct Conn {
    id: ConnectionId,
    version: ProtocolVersion,
    received: Vec<u8>,
    next_pid: u16,
}

struct Host<S: BrokerStorage> {
    broker: Broker<S>,
    conns: Vec<Option<Conn>>,
    now: Instant,
    buf: Vec<u8>,
}

impl<S: BrokerStorage> Host<S> {
    fn new(config: Config) -> Self {
        let size = config.max_packet_size as usize + 16;
        Self {
            broker: Broker::new(config, 3),
            conns: Vec::new(),
            now: Instant::ZERO,
            buf: vec![0; size],
        }
    }

    fn conn(&mut self, index: u8) -> Option<usize> {
        if self.conns.is_empty() {
            return None;
        }
        let i = usize::from(index) % self.conns.len();
        self.conns[i].as_ref().map(|_| i)
    }

    fn send(&mut self, i: usize, packet: &Packet<'_>) {
        let Some(conn) = &self.conns[i] else { return };
        let version = match packet {
            Packet::Connect(c) => c.get().protocol,
            _ => conn.version,
        };
        let mut bytes = vec![0; packet.encoded_len(version)];
        if packet.encode(version, &mut bytes).is_ok() {
            self.feed(i, &bytes);
        }
    }

    fn feed(&mut self, i: usize, bytes: &[u8]) {
        let Some(conn) = &self.conns[i] else { return };
        let used = self.broker.handle_bytes(conn.id, bytes, self.now);
        assert!(used <= bytes.len());
        self.pump();
    }

    fn pump(&mut self) {
        for _ in 0..10_000 {
            let Some(event) = self.broker.poll_event() else {
                return;
            };
            match event {
                Event::Transmit(id) => self.drain(id),
                Event::Connected(id) => assert!(
                    self.conns.iter().flatten().any(|c| c.id == id),
                    "Connected for a connection the host does not hold"
                ),
                Event::Resume(id) => {
                    assert!(
                        self.conns.iter().flatten().any(|c| c.id == id),
                        "Resume for a connection the host does not hold"
                    );
                    assert!(
                        !self.broker.is_stalled(id),
                        "Resume of a stalled connection"
                    );
                }
                Event::Close(id, _) => {
                    self.drain(id);
                    self.broker.handle_disconnect(id, self.now);
                    for slot in &mut self.conns {
                        if slot.as_ref().is_some_and(|c| c.id == id) {
                            *slot = None;
                        }
                    }
                }
            }
        }
        panic!("events never drain");
    }

    fn drain(&mut self, id: ConnectionId) {
        let Some(conn) = self.conns.iter_mut().flatten().find(|c| c.id == id) else {
            // A connection the host already dropped: the broker must not care.
            transmit(&mut self.broker, id, &mut self.buf, self.now, |_| {});
            return;
        };
        transmit(&mut self.broker, id, &mut self.buf, self.now, |bytes| {
            conn.received.extend_from_slice(bytes);
        });
        // Everything sent must be well-formed server packets. The host only guesses the
        // version (raw bytes may carry a CONNECT of any level, or none), so the stream must
        // decode completely in the version the host assumes or in one other version.
        let candidates = [conn.version, ProtocolVersion::V5, ProtocolVersion::V3_1_1];
        let mut outcome = Err(None);
        for version in candidates {
            match decode_stream(&conn.received, version) {
                Ok(used) => {
                    conn.version = version;
                    outcome = Ok(used);
                    break;
                }
                Err(e) => {
                    if outcome == Err(None) {
                        outcome = Err(Some(e));
                    }
                }
            }
        }
        let used = match outcome {
            Ok(used) => used,
            Err(e) => panic!("the broker sent bytes that do not decode: {e:?}"),
        };
        conn.received.drain(..used);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Open => {
                if let Ok(id) = self.broker.handle_connect(self.now) {
                    self.conns.push(Some(Conn {
                        id,
                        version: ProtocolVersion::V5,
                        received: Vec::new(),
                        next_pid: 0,
                    }));
                }
            }
            Op::Connect {
                conn,
                version,
                clean,
                keep_alive,
                id,
                will,
                expiry,
                alias_max,
            } => {
                let Some(i) = self.conn(conn) else { return };
                let version = [
                    ProtocolVersion::V3_1,
                    ProtocolVersion::V3_1_1,
                    ProtocolVersion::V5,
                ][usize::from(version) % 3];
                if let Some(c) = &mut self.conns[i] {
                    c.version = version;
                }
                let client_id =
                    ["c0", "c1", "c2", "", "a-long-client-identifier"][usize::from(id) % 5];
                let props = [
                    Property::SessionExpiryInterval(u32::from(expiry)),
                    Property::TopicAliasMaximum(u16::from(alias_max % 4)),
                ];
                let will_props = [
                    Property::WillDelayInterval(u32::from(expiry % 3)),
                    Property::MessageExpiryInterval(5),
                ];
                let v5 = version == ProtocolVersion::V5;
                let connect = Connect {
                    protocol: version,
                    clean_start: clean,
                    keep_alive: u16::from(keep_alive % 5),
                    properties: if v5 {
                        List::new(&props)
                    } else {
                        Properties::empty()
                    },
                    client_id,
                    will: will.then_some(Will {
                        qos: QoS::AtLeastOnce,
                        retain: expiry % 2 == 0,
                        properties: if v5 {
                            List::new(&will_props)
                        } else {
                            Properties::empty()
                        },
                        topic: "will/t",
                        payload: b"gone",
                    }),
                    username: None,
                    password: None,
                };
                self.send(i, &Packet::from(&connect));
            }
            Op::Subscribe {
                conn,
                filter,
                qos,
                no_local,
                id,
            } => {
                let Some(i) = self.conn(conn) else { return };
                let pid = self.pid(i);
                let options = SubscriptionOptions {
                    no_local,
                    ..SubscriptionOptions::qos(QoS::from_bits(qos % 3).unwrap_or_default())
                };
                let subs = [Subscription::new(
                    FILTERS[usize::from(filter) % FILTERS.len()],
                    options,
                )];
                let props = [Property::SubscriptionIdentifier(u32::from(id % 3) + 1)];
                let packet = Packet::Subscribe(Subscribe {
                    packet_id: pid,
                    properties: if id % 2 == 0 {
                        List::new(&props)
                    } else {
                        Properties::empty()
                    },
                    subscriptions: List::new(&subs),
                });
                self.send(i, &packet);
            }
            Op::Publish {
                conn,
                topic,
                qos,
                retain,
                len,
                expiry,
                alias,
            } => {
                let Some(i) = self.conn(conn) else { return };
                let payload = vec![0x5A; usize::from(len % 64)];
                let qos_pid = match qos % 3 {
                    0 => QoSPid::AtMostOnce,
                    1 => QoSPid::AtLeastOnce(self.pid(i)),
                    _ => QoSPid::ExactlyOnce(self.pid(i)),
                };
                let alias = u16::from(alias % 4);
                let props = [
                    Property::MessageExpiryInterval(u32::from(expiry % 4)),
                    Property::TopicAlias(alias.max(1)),
                ];
                let use_alias = alias > 0;
                let topic = if use_alias && expiry % 2 == 1 {
                    ""
                } else {
                    TOPICS[usize::from(topic) % TOPICS.len()]
                };
                let packet = Packet::Publish(Publish {
                    dup: false,
                    qos_pid,
                    retain,
                    topic,
                    properties: List::new(&props[..if use_alias { 2 } else { 1 }]),
                    payload: &payload,
                });
                self.send(i, &packet);
            }
            Op::AckAll { conn } => {
                let Some(i) = self.conn(conn) else { return };
                let Some(c) = &self.conns[i] else { return };
                // Acknowledge as a client would: PUBACK, PUBREC then PUBREL answers.
                let mut acks = Vec::new();
                let mut used = 0;
                let bytes = c.received.clone();
                while let Ok((packet, n)) = decode(&bytes[used..], c.version, usize::MAX) {
                    used += n;
                    match packet {
                        Packet::Publish(p) => match p.qos_pid {
                            QoSPid::AtLeastOnce(id) => acks.push(Packet::PubAck(Ack::new(id))),
                            QoSPid::ExactlyOnce(id) => acks.push(Packet::PubRec(Ack::new(id))),
                            QoSPid::AtMostOnce => {}
                        },
                        Packet::PubRel(a) => acks.push(Packet::PubComp(Ack::new(a.packet_id))),
                        Packet::PubRec(a) => acks.push(Packet::PubRel(Ack::new(a.packet_id))),
                        _ => {}
                    }
                }
                for ack in &acks {
                    self.send(i, ack);
                }
            }
            Op::Raw { conn, ref bytes } => {
                let Some(i) = self.conn(conn) else { return };
                self.feed(i, bytes);
            }
            Op::Drop { conn } => {
                let Some(i) = self.conn(conn) else { return };
                if let Some(c) = self.conns[i].take() {
                    self.broker.handle_disconnect(c.id, self.now);
                    self.pump();
                }
            }
            Op::Advance { seconds } => {
                let target = self.now + Duration::from_secs(u64::from(seconds % 200));
                let mut rounds = 0;
                while let Some(at) = self.broker.poll_timeout() {
                    if at > target {
                        break;
                    }
                    rounds += 1;
                    assert!(rounds < 10_000, "a timer never clears");
                    self.now = self.now.max(at);
                    self.broker.handle_timeout(self.now);
                    self.pump();
                }
                self.now = target;
            }
            Op::Persist => {
                let mut buf = vec![0u8; 8192];
                for _ in 0..10_000 {
                    match self.broker.poll_persist(&mut buf) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => panic!("persistence record does not fit 8 KiB: {e:?}"),
                    }
                }
            }
        }
        // Every Close was followed by handle_disconnect, so the broker's connected clients
        // are among the connections the host still holds.
        let open = self.conns.iter().flatten().count() as u64;
        let connected = self.broker.stats().clients_connected;
        assert!(
            connected <= open,
            "{connected} clients connected on {open} open connections"
        );
    }

    fn pid(&mut self, i: usize) -> PacketId {
        let Some(c) = &mut self.conns[i] else {
            return PacketId::MIN;
        };
        c.next_pid = c.next_pid.wrapping_add(1).max(1);
        PacketId::new(c.next_pid).unwrap_or(PacketId::MIN)
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut tiny = Host::<Tiny>::new(config());
    // The growable broker slows publishers instead of dropping, so stalls and resumes
    // run too.
    let mut growable = Host::<Growable>::new(Config {
        overflow_policy: fulmar_core::broker::OverflowPolicy::Backpressure,
        ..config()
    });
    for op in ops.iter().take(64) {
        tiny.apply(op);
        growable.apply(op);
    }
});
