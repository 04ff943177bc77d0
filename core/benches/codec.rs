//! Codec speed: fulmar-core against mqttrs 0.4 and mqttbytes 0.6 on the same packets.
//!
//! Every group runs the three libraries side by side on one logical packet, encoded once
//! into a canonical frame. Before anything is timed, each library decodes that frame and
//! re-encodes it, and the bytes must come back identical, so all of them do the same
//! work on the same bytes. MQTT 3.1.1 is compared three ways; MQTT 5.0 PUBLISH is
//! compared between fulmar and `mqttbytes::v5` (mqttrs has no 5.0).
//!
//! What each operation counts, per library:
//! - decode: from the frame in memory to the library's packet value, with every check the
//!   library makes, and dropping that value (mqttbytes allocates its strings and lists, so
//!   freeing them is part of its cost).
//! - encode: from a packet value into a reused output buffer. fulmar encodes a packet the
//!   caller built (v5 properties given as a slice of items, not copied wire bytes); mqttrs
//!   `encode_slice`s into a reused `[u8]`; mqttbytes `write`s into a `BytesMut` cleared
//!   first, so it never reallocates.
//! - decode+encode: what a broker does to forward a message: decode the frame, encode the
//!   decoded packet into a reused buffer.
//!
//! Run with `cargo bench -p fulmar-core --bench codec`; add a filter such as `publish` to
//! run some groups only.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fulmar_core::codec::{
    self, Connect, List, MAX_PACKET_SIZE, Packet, PacketId, Properties, Property, ProtocolVersion,
    Publish, QoS, QoSPid, Subscribe, Subscription, SubscriptionOptions, Will,
};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// The payload sizes PUBLISH is measured with: a sensor reading, a JSON document, a blob.
const PAYLOAD_SIZES: [(usize, &str); 3] = [(16, "16B"), (256, "256B"), (16 * 1024, "16KiB")];

const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";

/// MQTT 5.0 PUBLISH properties, in the order mqttbytes writes them (so its re-encoding is
/// byte-identical): message expiry, two user properties, a subscription identifier and a
/// content type.
const V5_PROPERTIES: [Property<'static>; 5] = [
    Property::MessageExpiryInterval(3600),
    Property::UserProperty("source", "gateway-12"),
    Property::UserProperty("trace-id", "4bf92f3577b34da6"),
    Property::SubscriptionIdentifier(17),
    Property::ContentType("application/json"),
];

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("non-zero packet id")
}

/// Encodes `packet` with fulmar and leaks the frame, so every library reads the very same
/// bytes and mqttbytes can wrap them in a `Bytes::from_static`.
fn frame(packet: &Packet<'_>, version: ProtocolVersion) -> &'static [u8] {
    let mut out = vec![0; packet.encoded_len(version)];
    let n = packet
        .encode(version, &mut out)
        .expect("encode canonical frame");
    assert_eq!(n, out.len());
    Box::leak(out.into_boxed_slice())
}

// ---------------------------------------------------------------------------------------
// mqttbytes glue
//
// mqttbytes' entry point `v4::read(&mut BytesMut, max)` frames a packet by `split_to` off
// the caller's receive buffer, which it consumes. Feeding it a fresh `BytesMut` copy of the
// frame every iteration would charge it an allocation and a copy that fulmar and mqttrs
// never pay. So the helpers below do exactly what `read` does after that split: `check`
// the fixed header, then hand the frame as a `Bytes` to the packet type's `read`. The frame
// is a `Bytes::from_static`, whose `clone` is a pointer copy with no reference count: the
// cheapest honest way to give mqttbytes the bytes, and its payloads stay zero-copy slices
// of that same buffer.
// ---------------------------------------------------------------------------------------

fn mqttbytes_v4_decode(frame: &Bytes) -> mqttbytes::v4::Packet {
    use mqttbytes::{PacketType, v4};
    let header = mqttbytes::check(frame.iter(), MAX_PACKET_SIZE).expect("mqttbytes frame");
    let bytes = frame.clone();
    let packet = match header.packet_type().expect("mqttbytes packet type") {
        PacketType::Connect => v4::Connect::read(header, bytes).map(v4::Packet::Connect),
        PacketType::Publish => v4::Publish::read(header, bytes).map(v4::Packet::Publish),
        PacketType::Subscribe => v4::Subscribe::read(header, bytes).map(v4::Packet::Subscribe),
        other => unreachable!("not benchmarked: {other:?}"),
    };
    packet.expect("mqttbytes v4 decode")
}

fn mqttbytes_v4_encode(packet: &mqttbytes::v4::Packet, out: &mut BytesMut) -> usize {
    use mqttbytes::v4::Packet as P;
    out.clear();
    let written = match packet {
        P::Connect(p) => p.write(out),
        P::Publish(p) => p.write(out),
        P::Subscribe(p) => p.write(out),
        other => unreachable!("not benchmarked: {other:?}"),
    };
    written.expect("mqttbytes v4 encode");
    // `Connect::write` returns the remaining length, not the bytes written.
    out.len()
}

fn mqttbytes_v5_decode(frame: &Bytes) -> mqttbytes::v5::Packet {
    use mqttbytes::{PacketType, v5};
    let header = mqttbytes::check(frame.iter(), MAX_PACKET_SIZE).expect("mqttbytes frame");
    match header.packet_type().expect("mqttbytes packet type") {
        PacketType::Publish => v5::Publish::read(header, frame.clone())
            .map(v5::Packet::Publish)
            .expect("mqttbytes v5 decode"),
        other => unreachable!("not benchmarked: {other:?}"),
    }
}

fn mqttbytes_v5_encode(packet: &mqttbytes::v5::Packet, out: &mut BytesMut) -> usize {
    out.clear();
    match packet {
        mqttbytes::v5::Packet::Publish(p) => p.write(out).expect("mqttbytes v5 encode"),
        other => unreachable!("not benchmarked: {other:?}"),
    };
    out.len()
}

// ---------------------------------------------------------------------------------------
// One logical packet, prepared for every library
// ---------------------------------------------------------------------------------------

/// A packet in each library's form plus the frame they all decode.
struct Case {
    version: ProtocolVersion,
    frame: &'static [u8],
    bytes: Bytes,
    /// The packet as a fulmar caller builds it, for the encode rows.
    fulmar: Packet<'static>,
    /// Present for 3.1.1 only.
    mqttrs: Option<mqttrs::Packet<'static>>,
    mqttbytes_v4: Option<mqttbytes::v4::Packet>,
    mqttbytes_v5: Option<mqttbytes::v5::Packet>,
}

impl Case {
    /// Builds the frame from `packet` and checks that every library round-trips it.
    fn new(packet: Packet<'static>, version: ProtocolVersion) -> Self {
        let frame = frame(&packet, version);
        let bytes = Bytes::from_static(frame);

        let (decoded, used) = codec::decode(frame, version, MAX_PACKET_SIZE).expect("fulmar");
        assert_eq!(used, frame.len());
        assert_eq!(decoded, packet);

        // The encode rows copy the payload from inside the frame, as the other libraries'
        // decoded packets do: a 16 KiB `memcpy` is faster when source and destination share
        // their alignment, and every library should get the same source.
        let packet = match (packet, decoded) {
            (Packet::Publish(built), Packet::Publish(read)) => Packet::Publish(Publish {
                payload: read.payload,
                ..built
            }),
            (built, _) => built,
        };

        let mut case = Self {
            version,
            frame,
            bytes,
            fulmar: packet,
            mqttrs: None,
            mqttbytes_v4: None,
            mqttbytes_v5: None,
        };
        let mut out = vec![0; frame.len()];
        let mut out_mut = BytesMut::with_capacity(frame.len());
        if version == V5 {
            let p = mqttbytes_v5_decode(&case.bytes);
            let n = mqttbytes_v5_encode(&p, &mut out_mut);
            assert_eq!(&out_mut[..n], frame, "mqttbytes v5 round trip");
            case.mqttbytes_v5 = Some(p);
        } else {
            let p = mqttrs::decode_slice(frame)
                .expect("mqttrs decode")
                .expect("mqttrs: whole frame");
            let n = mqttrs::encode_slice(&p, &mut out).expect("mqttrs encode");
            assert_eq!(&out[..n], frame, "mqttrs round trip");
            case.mqttrs = Some(p);

            let p = mqttbytes_v4_decode(&case.bytes);
            let n = mqttbytes_v4_encode(&p, &mut out_mut);
            assert_eq!(&out_mut[..n], frame, "mqttbytes v4 round trip");
            case.mqttbytes_v4 = Some(p);
        }
        case
    }

    /// Registers decode, encode or decode+encode rows for every library this case has.
    fn bench(&self, c: &mut Criterion, group: &str, op: Op, parameter: &str) {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(self.frame.len() as u64));
        let version = self.version;
        let frame = self.frame;
        let suffix = if version == V5 { "_v5" } else { "" };

        // Output buffers, allocated once and reused by every iteration.
        let mut out = vec![0u8; frame.len()];
        let mut out_mut = BytesMut::with_capacity(frame.len());

        let id = BenchmarkId::new(format!("fulmar{suffix}"), parameter);
        match op {
            Op::Decode => g.bench_function(id, |b| {
                b.iter(|| codec::decode(black_box(frame), version, MAX_PACKET_SIZE).unwrap())
            }),
            Op::Encode => g.bench_function(id, |b| {
                b.iter(|| {
                    black_box(&self.fulmar)
                        .encode(version, black_box(&mut out))
                        .unwrap()
                })
            }),
            Op::DecodeEncode => g.bench_function(id, |b| {
                b.iter(|| {
                    let (p, _) = codec::decode(black_box(frame), version, MAX_PACKET_SIZE).unwrap();
                    p.encode(version, black_box(&mut out)).unwrap()
                })
            }),
        };

        if let Some(packet) = &self.mqttrs {
            let id = BenchmarkId::new("mqttrs", parameter);
            match op {
                Op::Decode => g.bench_function(id, |b| {
                    b.iter(|| mqttrs::decode_slice(black_box(frame)).unwrap().unwrap())
                }),
                Op::Encode => g.bench_function(id, |b| {
                    b.iter(|| mqttrs::encode_slice(black_box(packet), black_box(&mut out)).unwrap())
                }),
                Op::DecodeEncode => g.bench_function(id, |b| {
                    b.iter(|| {
                        let p = mqttrs::decode_slice(black_box(frame)).unwrap().unwrap();
                        mqttrs::encode_slice(&p, black_box(&mut out)).unwrap()
                    })
                }),
            };
        }

        if let Some(packet) = &self.mqttbytes_v4 {
            let id = BenchmarkId::new("mqttbytes", parameter);
            let bytes = &self.bytes;
            match op {
                Op::Decode => {
                    g.bench_function(id, |b| b.iter(|| mqttbytes_v4_decode(black_box(bytes))))
                }
                Op::Encode => g.bench_function(id, |b| {
                    b.iter(|| mqttbytes_v4_encode(black_box(packet), black_box(&mut out_mut)))
                }),
                Op::DecodeEncode => g.bench_function(id, |b| {
                    b.iter(|| {
                        let p = mqttbytes_v4_decode(black_box(bytes));
                        mqttbytes_v4_encode(&p, black_box(&mut out_mut))
                    })
                }),
            };
        }

        if let Some(packet) = &self.mqttbytes_v5 {
            let id = BenchmarkId::new("mqttbytes_v5", parameter);
            let bytes = &self.bytes;
            match op {
                Op::Decode => {
                    g.bench_function(id, |b| b.iter(|| mqttbytes_v5_decode(black_box(bytes))))
                }
                Op::Encode => g.bench_function(id, |b| {
                    b.iter(|| mqttbytes_v5_encode(black_box(packet), black_box(&mut out_mut)))
                }),
                Op::DecodeEncode => g.bench_function(id, |b| {
                    b.iter(|| {
                        let p = mqttbytes_v5_decode(black_box(bytes));
                        mqttbytes_v5_encode(&p, black_box(&mut out_mut))
                    })
                }),
            };
        }
        g.finish();
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Decode,
    Encode,
    DecodeEncode,
}

impl Op {
    const ALL: [Self; 3] = [Self::Decode, Self::Encode, Self::DecodeEncode];

    const fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Encode => "encode",
            Self::DecodeEncode => "decode+encode",
        }
    }
}

// ---------------------------------------------------------------------------------------
// The packets
// ---------------------------------------------------------------------------------------

/// CONNECT with a client id, keep alive, user name and password, and a will.
static CONNECT: Connect<'static> = Connect {
    protocol: V311,
    clean_start: true,
    keep_alive: 60,
    properties: Properties::empty(),
    client_id: "fulmar-bench-client-0001",
    will: Some(Will {
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::empty(),
        topic: "clients/fulmar-bench-client-0001/status",
        payload: b"offline",
    }),
    username: Some("bench-user"),
    password: Some(b"bench-password-123"),
};

fn connect_packet() -> Packet<'static> {
    Packet::from(&CONNECT)
}

/// PUBLISH at QoS 1 (so it carries a packet identifier) with `size` bytes of payload.
fn publish_packet(size: usize, properties: Properties<'static>) -> Packet<'static> {
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    Packet::Publish(Publish {
        dup: false,
        qos_pid: QoSPid::AtLeastOnce(pid(4242)),
        retain: false,
        topic: TOPIC,
        properties,
        payload: payload.leak(),
    })
}

/// SUBSCRIBE with four filters of mixed QoS and wildcards.
fn subscribe_packet() -> Packet<'static> {
    const SUBSCRIPTIONS: [Subscription<'static>; 4] = [
        Subscription::new(
            "sensors/+/temperature",
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        ),
        Subscription::new(
            "sensors/building-7/#",
            SubscriptionOptions::qos(QoS::AtMostOnce),
        ),
        Subscription::new(
            "$SYS/broker/clients/connected",
            SubscriptionOptions::qos(QoS::AtMostOnce),
        ),
        Subscription::new(
            "home/livingroom/lights/+/state",
            SubscriptionOptions::qos(QoS::ExactlyOnce),
        ),
    ];
    Packet::Subscribe(Subscribe {
        packet_id: pid(7),
        properties: Properties::empty(),
        subscriptions: List::new(&SUBSCRIPTIONS),
    })
}

fn connect(c: &mut Criterion) {
    let case = Case::new(connect_packet(), V311);
    case.bench(c, "connect_decode", Op::Decode, "v3.1.1");
    case.bench(c, "connect_encode", Op::Encode, "v3.1.1");
}

fn publish(c: &mut Criterion) {
    for op in Op::ALL {
        let group = format!("publish_{}", op.name());
        for (size, label) in PAYLOAD_SIZES {
            Case::new(publish_packet(size, Properties::empty()), V311).bench(c, &group, op, label);
            Case::new(publish_packet(size, Properties::new(&V5_PROPERTIES)), V5)
                .bench(c, &group, op, label);
        }
    }
}

/// Decode, then encode only the header: the payload goes out from the input buffer with a
/// vectored write (`Publish::encode_header`), as a broker forwarding a message does. The
/// other libraries have no such API: their rows above copy the payload.
fn publish_vectored(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_decode+encode_header");
    for (size, label) in PAYLOAD_SIZES {
        let packet = publish_packet(size, Properties::empty());
        let mut frame = vec![0u8; packet.encoded_len(V311)];
        packet.encode(V311, &mut frame).expect("encodes");
        let mut out = vec![0u8; 256];
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(BenchmarkId::new("fulmar", label), |b| {
            b.iter(|| {
                let (packet, _) = fulmar_core::codec::decode(black_box(&frame), V311, usize::MAX)
                    .expect("decodes");
                let Packet::Publish(p) = packet else {
                    unreachable!()
                };
                let head = p.encode_header(V311, &mut out).expect("fits");
                black_box((head, p.payload.len()))
            })
        });
    }
    g.finish();
}

fn subscribe(c: &mut Criterion) {
    let case = Case::new(subscribe_packet(), V311);
    case.bench(c, "subscribe_decode", Op::Decode, "4_filters");
    case.bench(c, "subscribe_encode", Op::Encode, "4_filters");
}

criterion_group! {
    name = benches;
    // Short runs: the whole file finishes in a few minutes; pass `--measurement-time` or
    // `--sample-size` on the command line for more precise figures.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = connect, publish, publish_vectored, subscribe
}
criterion_main!(benches);
