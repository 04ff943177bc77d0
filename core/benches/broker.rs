//! Broker speed end to end, in process: PUBLISH bytes in, PUBLISH bytes out.
//!
//! Each bench drives a `Broker<Growable>` directly, the way a host's event loop does: the
//! publishers' pre-encoded PUBLISH frames go in through `handle_bytes`, then `poll_event`
//! and `poll_transmit` (into one reused 64 KiB buffer) are drained until the broker has
//! nothing left to say. At QoS 1 the subscribers read the packet identifiers out of what
//! they received and answer with PUBACK frames through `handle_bytes`, and the publishers
//! take their own PUBACKs, so every timed iteration ends with the broker idle and its
//! queues empty. There is no `Sim` in the timed loop, no decoding on the client side beyond
//! finding frame boundaries and packet identifiers, and time stands still (keep alive off).
//!
//! Shapes, each at QoS 0 and QoS 1 (publish and subscription QoS alike), MQTT 3.1.1
//! clients, a 32-byte payload:
//! - `1to1`: one publisher, one subscriber, one message per iteration;
//! - `1to1000`: one publisher, 1 000 subscribers to the same topic, one message per
//!   iteration, so 1 000 deliveries;
//! - `1000to1`: 1 000 publishers on topics of their own, one subscriber to
//!   `site/+/dev/+/temp`, one message from each publisher per iteration.
//!
//! Throughput is in messages delivered to subscribers. Before timing, one iteration is
//! checked to deliver exactly the expected number.
//!
//! Run with `cargo bench -p fulmar-core --features alloc --bench broker`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fulmar_core::broker::{Broker, Config, ConnectionId, Event, Growable};
use fulmar_core::codec::{
    Connect, List, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, QoSPid, Subscribe,
    Subscription, SubscriptionOptions,
};
use fulmar_core::time::Instant;

const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;
const NOW: Instant = Instant::ZERO;
const PAYLOAD: [u8; 32] = *b"{\"t\":21.5,\"rh\":40.1,\"ok\":true}  ";
const OUT_BUFFER: usize = 64 * 1024;

fn encode(packet: &Packet<'_>) -> Vec<u8> {
    let mut out = vec![0; packet.encoded_len(VERSION)];
    let n = packet.encode(VERSION, &mut out).expect("encode");
    out.truncate(n);
    out
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

/// A broker with its clients and the host's buffers.
struct Bench {
    broker: Broker<Growable>,
    /// The transmit buffer, reused for every `poll_transmit`.
    out: Vec<u8>,
    /// PUBACKs a subscriber owes, gathered from one `poll_transmit`.
    acks: Vec<u8>,
    /// Per connection slot: whether it is a subscriber (whose PUBLISHes count).
    subscriber: Vec<bool>,
    publishers: Vec<(ConnectionId, Vec<u8>)>,
}

impl Bench {
    fn new(
        publishers: usize,
        subscribers: usize,
        qos: QoS,
        topic: impl Fn(usize) -> String,
        filter: &str,
    ) -> Self {
        let config = Config {
            max_connections: 4096,
            max_clients: 4096,
            max_packet_size: OUT_BUFFER as u32,
            max_queued_messages: 100_000,
            max_queued_bytes: 64 << 20,
            ..Config::default()
        };
        let mut bench = Bench {
            broker: Broker::new(config, 7),
            out: vec![0; OUT_BUFFER],
            acks: Vec::new(),
            subscriber: Vec::new(),
            publishers: Vec::new(),
        };
        for i in 0..subscribers {
            let conn = bench.connect(&format!("sub-{i}"));
            let subs = [Subscription::new(filter, SubscriptionOptions::qos(qos))];
            let subscribe = encode(&Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: Properties::empty(),
                subscriptions: List::new(&subs),
            }));
            bench.feed(conn, &subscribe);
            bench.mark_subscriber(conn);
        }
        for i in 0..publishers {
            let conn = bench.connect(&format!("pub-{i}"));
            let topic = topic(i);
            let qos_pid = match qos {
                QoS::AtMostOnce => QoSPid::AtMostOnce,
                _ => QoSPid::AtLeastOnce(pid(1)),
            };
            let publish = encode(&Packet::Publish(Publish {
                dup: false,
                qos_pid,
                retain: false,
                topic: &topic,
                properties: Properties::empty(),
                payload: &PAYLOAD,
            }));
            bench.publishers.push((conn, publish));
        }
        bench.pump();
        bench
    }

    fn connect(&mut self, client_id: &str) -> ConnectionId {
        let conn = self
            .broker
            .handle_connect(NOW)
            .expect("room for a connection");
        let connect = encode(&Packet::from(&Connect {
            protocol: VERSION,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::empty(),
            client_id,
            will: None,
            username: None,
            password: None,
        }));
        self.feed(conn, &connect);
        self.pump();
        conn
    }

    fn feed(&mut self, conn: ConnectionId, bytes: &[u8]) {
        let used = self.broker.handle_bytes(conn, bytes, NOW);
        assert_eq!(used, bytes.len(), "whole frames are consumed");
    }

    fn mark_subscriber(&mut self, conn: ConnectionId) {
        let slot = conn.slot() as usize;
        if self.subscriber.len() <= slot {
            self.subscriber.resize(slot + 1, false);
        }
        self.subscriber[slot] = true;
    }

    /// One round of every publisher sending its PUBLISH, then the host loop until idle.
    /// Returns the messages subscribers received.
    fn round(&mut self) -> u64 {
        for (conn, publish) in &self.publishers {
            let used = self.broker.handle_bytes(*conn, black_box(publish), NOW);
            debug_assert_eq!(used, publish.len());
        }
        self.pump()
    }

    /// Drains events and output; subscribers acknowledge QoS 1 messages as they arrive.
    fn pump(&mut self) -> u64 {
        let mut delivered = 0;
        while let Some(event) = self.broker.poll_event() {
            let conn = match event {
                Event::Transmit(conn) => conn,
                Event::Connected(_) | Event::Resume(_) => continue,
                Event::Close(conn, reason) => panic!("{conn:?} closed: {reason:?}"),
            };
            let is_subscriber = self
                .subscriber
                .get(conn.slot() as usize)
                .copied()
                .unwrap_or(false);
            loop {
                let n = self
                    .broker
                    .poll_transmit(conn, &mut self.out, NOW)
                    .expect("64 KiB holds any packet here");
                if n == 0 {
                    break;
                }
                if is_subscriber {
                    delivered += scan(&self.out[..n], &mut self.acks);
                }
            }
            if !self.acks.is_empty() {
                let used = self.broker.handle_bytes(conn, &self.acks, NOW);
                debug_assert_eq!(used, self.acks.len());
                self.acks.clear();
            }
        }
        delivered
    }
}

/// Walks the frames in `bytes`: counts the PUBLISHes and appends a PUBACK to `acks` for
/// each one at QoS 1. This is the least a client does with what it receives.
fn scan(bytes: &[u8], acks: &mut Vec<u8>) -> u64 {
    let mut publishes = 0;
    let mut at = 0;
    while at < bytes.len() {
        let first = bytes[at];
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = at + 1;
        loop {
            let b = bytes[i];
            len |= usize::from(b & 0x7F) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = i;
        if first >> 4 == 3 {
            publishes += 1;
            if (first >> 1) & 3 == 1 {
                let topic_len = usize::from(u16::from_be_bytes([bytes[body], bytes[body + 1]]));
                let pid = body + 2 + topic_len;
                acks.extend_from_slice(&[0x40, 0x02, bytes[pid], bytes[pid + 1]]);
            }
        }
        at = body + len;
    }
    publishes
}

fn broker_benches(c: &mut Criterion) {
    let one_topic = |_: usize| "site/1/dev/1/temp".to_owned();
    let own_topic = |i: usize| format!("site/{i}/dev/0/temp");
    type Shape<'a> = (&'a str, usize, usize, &'a dyn Fn(usize) -> String, &'a str);
    let shapes: [Shape<'_>; 3] = [
        ("1to1", 1, 1, &one_topic, "site/1/dev/1/temp"),
        ("1to1000", 1, 1000, &one_topic, "site/1/dev/1/temp"),
        ("1000to1", 1000, 1, &own_topic, "site/+/dev/+/temp"),
    ];
    let mut group = c.benchmark_group("broker");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, publishers, subscribers, topic, filter) in shapes {
        for (qos, qos_name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
            let mut bench = Bench::new(publishers, subscribers, qos, topic, filter);
            let expected = (publishers * subscribers) as u64;
            assert_eq!(
                bench.round(),
                expected,
                "{name} {qos_name}: every message arrives"
            );
            assert_eq!(bench.round(), expected, "{name} {qos_name}: and again");
            group.throughput(Throughput::Elements(expected));
            group.bench_function(BenchmarkId::new(name, qos_name), |b| {
                b.iter(|| bench.round())
            });
            assert_eq!(
                bench.round(),
                expected,
                "{name} {qos_name}: still after timing"
            );
        }
    }
    group.finish();
}

criterion_group!(benches, broker_benches);
criterion_main!(benches);
