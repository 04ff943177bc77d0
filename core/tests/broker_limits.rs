//! Limits and hostile input (ARCHITECTURE.md invariants 3 and 4: bad input costs only that
//! client its connection; every limit is reached with a clear error, never a crash): the
//! subscription quota, invalid filters, topic length and depth, the server's Maximum Packet
//! Size, a fixed-capacity broker that is full, and garbage on the wire. Every test runs on
//! both storage back-ends; the capacity tests run a [`Tiny`] fixed broker against a
//! growable one held to the same limits by `Config`.
#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config};
use fulmar_core::codec::{Packet, Properties, Property, ProtocolVersion, ReasonCode};
use fulmar_core::sim::{ClientHandle, Received, Sim, connect_packet};
use fulmar_core::time::Duration;
use fulmar_core::topic::TopicLimits;

storage_tests!(
    subscription_quota_per_client,
    invalid_filters_refused_connection_stays,
    topic_limits_for_filters_names_and_wills,
    max_packet_size_closes_with_packet_too_large,
    hostile_bytes_before_connect,
    hostile_bytes_after_connect,
    server_only_packets_from_client_close,
    pseudo_random_bytes_never_hurt_others,
    partial_packets_wait_for_more_bytes,
    retained_store_bounded,
    retained_bytes_freed_by_replace_clear_and_expiry,
);

mod capacity {
    //! The same scenarios on a fixed broker that runs out of storage and on a growable
    //! one held back by `Config`: a client sees the same refusals either way.
    use super::*;

    /// Growable, limited by `Config` to what [`Tiny`] holds.
    fn limited() -> Config {
        Config {
            max_sessions: 3,
            max_subscriptions_per_client: 4,
            ..Config::default()
        }
    }

    #[test]
    fn full_broker_refuses_cleanly_growable() {
        super::full_broker_refuses_cleanly::<Growable>(limited());
    }

    #[test]
    fn full_broker_refuses_cleanly_fixed() {
        super::full_broker_refuses_cleanly::<Tiny>(Config::default());
    }

    #[test]
    fn exhausted_message_storage_never_panics_growable() {
        super::exhausted_message_storage_never_panics::<Growable>(Config {
            max_queued_messages: 4,
            max_retained: 2,
            ..limited()
        });
    }

    #[test]
    fn exhausted_message_storage_never_panics_fixed() {
        super::exhausted_message_storage_never_panics::<Tiny>(Config::default());
    }
}

/// The code a 3.1.1 SUBACK carries for any refusal: 0x80 Failure (3.1.1 §3.9.3).
fn suback_failure(version: ProtocolVersion, v5: ReasonCode) -> ReasonCode {
    if version.is_v5() {
        v5
    } else {
        ReasonCode::UnspecifiedError
    }
}

/// `Config::max_subscriptions_per_client`: a subscription beyond it gets SUBACK 0x97 Quota
/// exceeded (3.1.1: 0x80 Failure); replacing an existing one is still granted, the
/// connection stays up, and unsubscribing makes room.
fn subscription_quota_per_client<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config {
            max_subscriptions_per_client: 2,
            ..Config::default()
        });
        let c = sim.connect(version, "c", true, 0);
        assert_eq!(sim.subscribe(c, "a", QOS0), ReasonCode::Success);
        assert_eq!(sim.subscribe(c, "b", QOS0), ReasonCode::Success);
        assert_eq!(
            sim.subscribe(c, "c", QOS0),
            suback_failure(version, ReasonCode::QuotaExceeded)
        );
        assert_eq!(sim.subscribe(c, "a", QOS1), ReasonCode::GrantedQoS1);
        assert!(sim.is_connected(c));
        // Another client has its own quota.
        let d = sim.connect(version, "d", true, 0);
        assert_eq!(sim.subscribe(d, "c", QOS0), ReasonCode::Success);
        sim.unsubscribe(c, "b");
        assert_eq!(sim.subscribe(c, "c", QOS0), ReasonCode::Success);
    }
}

/// 3.1.1 [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1] / 5.0 the same and [MQTT-4.8.2-1],
/// [MQTT-4.8.2-2]: invalid filters get SUBACK 0x8F Topic Filter invalid (3.1.1: 0x80), and
/// the connection stays up.
fn invalid_filters_refused_connection_stays<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "c", true, 0);
        for filter in [
            "a/#/b",
            "a/b#",
            "a+/b",
            "#/",
            "$share/g",
            "$share//t",
            "$share/g+/t",
            "$share/g/",
        ] {
            assert_eq!(
                sim.subscribe(c, filter, QOS0),
                suback_failure(version, ReasonCode::TopicFilterInvalid),
                "{version}: {filter:?}"
            );
            assert!(sim.is_connected(c), "{filter:?}");
        }
        assert_eq!(sim.broker.subscription_count(), 0);
        assert_eq!(sim.subscribe(c, "a/+/b/#", QOS0), ReasonCode::Success);
        // Except U+0000, which the string rules make a malformed packet that closes the
        // connection (3.1.1 [MQTT-1.5.3-2], 5.0 [MQTT-1.5.4-2]).
        sim.subscribe(c, "a\u{0}b", QOS0);
        assert_closed_with(&mut sim, c, version, ReasonCode::MalformedPacket);
    }
}

/// `Config::topic_limits`: a filter beyond the configured length or depth is refused with
/// 0x8F (3.1.1: 0x80); a PUBLISH to such a topic is refused with 0x90 Topic Name invalid
/// (5.0 §3.3.2.1: the name is well formed but not accepted: DISCONNECT 0x90; 3.1.1 can only
/// close); a will on such a topic is refused with CONNACK 0x90.
fn topic_limits_for_filters_names_and_wills<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config {
            topic_limits: TopicLimits {
                max_len: 16,
                max_depth: 3,
            },
            ..Config::default()
        });
        let c = sim.connect(version, "c", true, 0);
        let refused = suback_failure(version, ReasonCode::TopicFilterInvalid);
        assert_eq!(sim.subscribe(c, "a/b/c/d", QOS0), refused);
        assert_eq!(sim.subscribe(c, "a/+/+/#", QOS0), refused);
        assert_eq!(sim.subscribe(c, "abcdefghijklmnopq", QOS0), refused);
        assert_eq!(sim.subscribe(c, "a/+/#", QOS0), ReasonCode::Success);
        // `$share/group/` does not count against the depth.
        let member = sim.connect(version, "member", true, 0);
        assert_eq!(
            sim.subscribe(member, "$share/g/a/b/c", QOS0),
            ReasonCode::Success
        );

        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "a/b/c", b"fits", QOS0, false);
        assert_eq!(payloads(&sim.received(c)), ["fits"]);
        sim.publish(p, "a/b/c/d", b"deep", QOS1, false);
        assert_closed_with(&mut sim, p, version, ReasonCode::TopicNameInvalid);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "abcdefghijklmnopq", b"long", QOS0, false);
        assert_closed_with(&mut sim, p, version, ReasonCode::TopicNameInvalid);
        assert_eq!(sim.received(c), []);
        assert!(sim.is_connected(c));
    }
    let mut sim = sim::<S>(Config {
        topic_limits: TopicLimits {
            max_len: 16,
            max_depth: 3,
        },
        ..Config::default()
    });
    let will = fulmar_core::sim::will("w/a/b/c", b"x", QOS0, false);
    let w = sim.connect_with(&connect(V5, "w", true, 0, &[], Some(will)));
    assert!(matches!(
        &sim.received(w)[..],
        [Received::ConnAck {
            code: ReasonCode::TopicNameInvalid,
            ..
        }]
    ));
    assert!(!sim.is_connected(w));
}

/// 5.0 §3.2.2.3.6: a packet above the server's Maximum Packet Size gets DISCONNECT 0x95
/// Packet too large ([MQTT-3.2.2-15] on the client side; §4.13); 3.1.1 closes. It is
/// refused from its fixed header, before the rest arrives; others are unaffected.
fn max_packet_size_closes_with_packet_too_large<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config {
            max_packet_size: 128,
            ..Config::default()
        });
        let sub = sim.connect(version, "sub", true, 0);
        sim.subscribe(sub, "t", QOS0);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "t", &[b'x'; 100], QOS0, false);
        assert_eq!(messages(&sim.received(sub)).len(), 1);
        sim.publish(p, "t", &[b'x'; 200], QOS0, false);
        assert_closed_with(&mut sim, p, version, ReasonCode::PacketTooLarge);
        // Only the header of a 16 KiB PUBLISH: refused at once.
        let q = sim.connect(version, "q", true, 0);
        sim.send_bytes(q, &[0x30, 0x80, 0x80, 0x01]);
        assert_closed_with(&mut sim, q, version, ReasonCode::PacketTooLarge);
        assert_eq!(sim.received(sub), []);
        let r = sim.connect(version, "r", true, 0);
        sim.publish(r, "t", b"ok", QOS0, false);
        assert_eq!(payloads(&sim.received(sub)), ["ok"]);
    }
}

/// A client that receives everything published on `t` and a publisher, to check that the
/// broker keeps serving others after a hostile connection.
fn bystanders<S: BrokerStorage>(sim: &mut Sim<S>) -> (ClientHandle, ClientHandle) {
    let sub = sim.connect(V5, "bystander-sub", true, 0);
    sim.subscribe(sub, "t", QOS1);
    let publisher = sim.connect(V3, "bystander-pub", true, 0);
    (sub, publisher)
}

fn assert_still_served<S: BrokerStorage>(
    sim: &mut Sim<S>,
    sub: ClientHandle,
    publisher: ClientHandle,
) {
    assert!(sim.is_connected(sub) && sim.is_connected(publisher));
    sim.publish(publisher, "t", b"still here", QOS1, false);
    assert!(matches!(
        &sim.received(publisher)[..],
        [Received::PubAck(..)]
    ));
    assert_eq!(drain_acking(sim, sub), ["still here"]);
}

/// [MQTT-3.1.0-1], [MQTT-4.8.0-1] (3.1.1) / §4.13 (5.0): anything but a well-formed CONNECT
/// first closes the connection, without CONNACK when the packet is not a readable CONNECT.
fn hostile_bytes_before_connect<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let (sub, publisher) = bystanders(&mut sim);
    let cases: [&[u8]; 9] = [
        &[0xFF; 16],
        // Remaining length with a fifth continuation byte.
        &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        // Packet type 0 is reserved.
        &[0x00, 0x00],
        // CONNECT with flags in the fixed header.
        &[0x11, 0x00],
        // CONNECT whose protocol name length runs past the packet.
        &[0x10, 0x03, 0x00, 0x09, b'M'],
        // Unknown protocol name.
        &[0x10, 0x0C, 0, 4, b'H', b'T', b'T', b'P', 4, 2, 0, 60, 0, 0],
        // Reserved CONNECT flag bit 0 set ([MQTT-3.1.2-3]).
        &[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 1, b'a',
        ],
        // Client identifier that is not UTF-8.
        &[
            0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, 0xC3, 0x28,
        ],
        b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n",
    ];
    for bytes in cases {
        let c = sim.open(V3).unwrap();
        sim.send_bytes(c, bytes);
        assert!(
            !sim.is_connected(c),
            "{bytes:02X?} left the connection open"
        );
        let got = sim.received(c);
        assert!(
            got.iter().all(
                |r| matches!(r, Received::ConnAck { code, .. } if *code != ReasonCode::Success)
            ),
            "{bytes:02X?}: {got:?}"
        );
    }
    assert_eq!(sim.broker.stats().clients_connected, 2);
    assert_still_served(&mut sim, sub, publisher);
}

/// Bytes a 3.1.1 client sends, the 5.0 bytes where they differ, the 5.0 DISCONNECT reason.
type HostileCase = (&'static [u8], Option<&'static [u8]>, ReasonCode);

/// 3.1.1 [MQTT-4.8.0-1] / 5.0 §4.13: a malformed packet or protocol error closes the
/// connection (5.0: after DISCONNECT 0x81 Malformed Packet or 0x82 Protocol Error).
fn hostile_bytes_after_connect<S: BrokerStorage>() {
    let cases: [HostileCase; 9] = [
        // Remaining length with a fifth continuation byte.
        (
            &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
            None,
            ReasonCode::MalformedPacket,
        ),
        // PUBLISH QoS 3 ([MQTT-3.3.1-4]).
        (
            &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
            None,
            ReasonCode::MalformedPacket,
        ),
        // PUBLISH whose topic length runs past the packet.
        (
            &[0x30, 0x03, 0x00, 0x05, b'a'],
            None,
            ReasonCode::MalformedPacket,
        ),
        // PUBLISH topic that is not UTF-8 ([MQTT-1.5.3-1] / [MQTT-1.5.4-1]).
        (
            &[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, b'x'],
            Some(&[0x30, 0x06, 0x00, 0x02, 0xC3, 0x28, 0x00, b'x']),
            ReasonCode::MalformedPacket,
        ),
        // SUBSCRIBE with reserved flags 0000 instead of 0010 ([MQTT-3.8.1-1]).
        (
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00],
            None,
            ReasonCode::MalformedPacket,
        ),
        // SUBSCRIBE without any filter (3.1.1 [MQTT-3.8.3-3], 5.0 [MQTT-3.8.3-2]).
        (
            &[0x82, 0x02, 0x00, 0x01],
            Some(&[0x82, 0x03, 0x00, 0x01, 0x00]),
            ReasonCode::ProtocolError,
        ),
        // PUBACK with packet identifier 0 (identifiers are non-zero: §2.3.1 / §2.2.1).
        (&[0x40, 0x02, 0x00, 0x00], None, ReasonCode::ProtocolError),
        // PINGREQ with a body.
        (&[0xC0, 0x01, 0x00], None, ReasonCode::MalformedPacket),
        // Reserved packet type 0.
        (&[0x00, 0x00], None, ReasonCode::MalformedPacket),
    ];
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let (sub, publisher) = bystanders(&mut sim);
        for (v3_bytes, v5_bytes, reason) in cases {
            let c = sim.connect(version, "hostile", true, 0);
            let bytes = match v5_bytes {
                Some(b) if version.is_v5() => b,
                _ => v3_bytes,
            };
            sim.send_bytes(c, bytes);
            let got = sim.received(c);
            assert!(!sim.is_connected(c), "{version} {bytes:02X?}");
            if version.is_v5() {
                assert!(
                    matches!(got.last(), Some(Received::Disconnect(code)) if *code == reason),
                    "{version} {bytes:02X?}: expected DISCONNECT {reason}, got {got:?}"
                );
            } else {
                assert_eq!(got, [], "{bytes:02X?}");
            }
        }
        assert_still_served(&mut sim, sub, publisher);
    }
}

/// CONNACK, SUBACK, UNSUBACK and PINGRESP only flow from server to client; receiving one is
/// a protocol error (3.1.1 [MQTT-4.8.0-1], 5.0 §4.13: DISCONNECT 0x82).
fn server_only_packets_from_client_close<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let (sub, publisher) = bystanders(&mut sim);
        // CONNACK, SUBACK, UNSUBACK, PINGRESP, well formed in each version.
        let packets: [&[u8]; 4] = if version.is_v5() {
            [
                &[0x20, 0x03, 0x00, 0x00, 0x00],
                &[0x90, 0x04, 0x00, 0x01, 0x00, 0x00],
                &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x00],
                &[0xD0, 0x00],
            ]
        } else {
            [
                &[0x20, 0x02, 0x00, 0x00],
                &[0x90, 0x03, 0x00, 0x01, 0x00],
                &[0xB0, 0x02, 0x00, 0x01],
                &[0xD0, 0x00],
            ]
        };
        for bytes in packets {
            let c = sim.connect(version, "c", true, 0);
            sim.send_bytes(c, bytes);
            assert_closed_with(&mut sim, c, version, ReasonCode::ProtocolError);
        }
        assert_still_served(&mut sim, sub, publisher);
    }
}

/// Invariant 3: whatever bytes a connected client sends, only that connection may suffer.
/// 300 pseudo-random byte strings (a fixed xorshift seed, so the run is reproducible),
/// some starting with a valid fixed header, after a valid CONNECT.
fn pseudo_random_bytes_never_hurt_others<S: BrokerStorage>() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config {
            max_packet_size: 4096,
            ..Config::default()
        });
        let (sub, publisher) = bystanders(&mut sim);
        for round in 0..300 {
            let c = sim.connect(version, "fuzz", true, 0);
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && len >= 2 {
                // A plausible fixed header: a real packet type and a matching length.
                bytes[0] = [
                    0x30, 0x32, 0x34, 0x40, 0x50, 0x62, 0x70, 0x82, 0xA2, 0xC0, 0xE0,
                ][(next() % 11) as usize];
                bytes[1] = (len - 2) as u8;
            }
            sim.send_bytes(c, &bytes);
            // Whatever happened, the fuzzing client is gone before the next round (it may
            // legitimately still be connected if the bytes were valid or incomplete).
            sim.drop_connection(c);
            sim.received(c);
            assert!(
                sim.is_connected(sub) && sim.is_connected(publisher),
                "round {round}"
            );
        }
        sim.received(sub);
        drain_acking(&mut sim, sub);
        assert_still_served(&mut sim, sub, publisher);
    }
}

/// §4.2: MQTT runs over a byte stream; `handle_bytes` consumes whole packets only and
/// leaves an incomplete one for the host to pass again with more bytes (no error).
fn partial_packets_wait_for_more_bytes<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let now = sim.now();
    let conn = sim.broker.handle_connect(now).unwrap();
    let connect = Packet::from(&connect_packet(V5, "slow", true, 0))
        .to_vec(V5)
        .unwrap();
    let ping = Packet::PingReq.to_vec(V5).unwrap();
    let mut stream = connect.clone();
    stream.extend_from_slice(&ping);
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed_total = 0;
    for byte in &stream {
        pending.push(*byte);
        let used = sim.broker.handle_bytes(conn, &pending, now);
        consumed_total += used;
        pending.drain(..used);
    }
    assert_eq!(consumed_total, stream.len());
    assert!(pending.is_empty());
    assert_eq!(sim.broker.connection_client_id(conn), Some("slow"));
    let mut out = vec![0u8; 1024];
    let n = sim.broker.poll_transmit(conn, &mut out, now).unwrap();
    let (first, used) = fulmar_core::codec::decode(&out[..n], V5, usize::MAX).unwrap();
    assert!(matches!(first, Packet::ConnAck(_)));
    let (second, _) = fulmar_core::codec::decode(&out[used..n], V5, usize::MAX).unwrap();
    assert_eq!(second, Packet::PingResp);
}

/// A broker out of room for sessions or subscriptions refuses with CONNACK 0x97 (3.1.1:
/// return code 3 Server unavailable) and SUBACK 0x97 (3.1.1: 0x80), never panics, and
/// serves again once room is freed.
fn full_broker_refuses_cleanly<S: BrokerStorage>(config: Config) {
    let mut sim = Sim::<S>::new(config);
    let a = sim.connect(V5, "a", true, 0);
    let b = sim.connect(V3, "b", true, 0);
    let c = sim.connect(V5, "c", true, 0);
    for (version, id, code) in [
        (V5, "d5", ReasonCode::QuotaExceeded),
        (V3, "d3", ReasonCode::ServerUnavailable),
    ] {
        let d = sim.connect_with(&connect_packet(version, id, true, 0));
        let got = sim.received(d);
        assert!(
            matches!(&got[..], [Received::ConnAck { code: got_code, .. }] if *got_code == code),
            "{version}: {got:?}"
        );
        assert!(!sim.is_connected(d));
    }
    for (i, filter) in ["f/1", "f/2", "f/3", "f/4"].into_iter().enumerate() {
        assert_eq!(
            sim.subscribe(a, filter, QOS1),
            ReasonCode::GrantedQoS1,
            "{i}"
        );
    }
    assert_eq!(sim.subscribe(a, "f/5", QOS1), ReasonCode::QuotaExceeded);
    assert!(sim.is_connected(a));
    // A 3.1.1 client whose own quota is not reached, on the fixed broker, finds the shared
    // store full; either way it gets 0x80 for the fifth subscription of `a`'s kind.
    assert!(sim.is_connected(b) && sim.is_connected(c));
    sim.publish(c, "f/1", b"works", QOS1, false);
    assert_eq!(drain_acking(&mut sim, a), ["works"]);
    // Free a session and a subscription: both are usable again.
    sim.disconnect(b, ReasonCode::Success);
    let d = sim.connect(V5, "d", true, 0);
    sim.unsubscribe(a, "f/4");
    assert_eq!(sim.subscribe(a, "f/5", QOS1), ReasonCode::GrantedQoS1);
    sim.publish(d, "f/5", b"again", QOS0, false);
    assert_eq!(payloads(&sim.received(a)), ["again"]);
}

/// Messages, queue entries and blob bytes run out: publishers get QuotaExceeded (5.0
/// PUBACK 0x97) or a closed connection (3.1.1 cannot refuse a PUBLISH), offline queues
/// drop, oversized retained messages are not kept — and nothing panics; once the load is
/// drained, the broker serves normally.
fn exhausted_message_storage_never_panics<S: BrokerStorage>(config: Config) {
    let mut sim = Sim::<S>::new(config);
    let props = [Property::SessionExpiryInterval(3600)];
    let (offline, _) = connect_ok(&mut sim, &connect(V5, "offline", true, 0, &props, None));
    sim.subscribe(offline, "load/#", QOS1);
    sim.disconnect(offline, ReasonCode::Success);
    let online = sim.connect(V5, "online", true, 0);
    sim.subscribe(online, "load/#", QOS2);
    let p = sim.connect(V5, "p", true, 0);
    let mut refused = 0;
    for i in 0..40 {
        let payload = vec![b'0' + (i % 10) as u8; 50 + 10 * i];
        let retain = i % 3 == 0;
        let topic = format!("load/{}", i % 5);
        sim.publish_with(p, &topic, &payload, QOS1, retain, Properties::empty());
        for r in sim.received(p) {
            match r {
                Received::PubAck(_, code) if code.is_error() => {
                    assert_eq!(code, ReasonCode::QuotaExceeded);
                    refused += 1;
                }
                // Accepted; copies that found no room are dropped and counted.
                Received::PubAck(_, code) => assert_eq!(code, ReasonCode::Success),
                other => panic!("{other:?}"),
            }
        }
        assert!(sim.is_connected(p));
    }
    let stats = sim.broker.stats();
    assert!(
        stats.messages_dropped > 0,
        "the load must overflow something: {stats:?}"
    );
    assert!(refused < 40);
    // The online subscriber never acknowledged: its window and the stores are full.
    let got = sim.received(online);
    assert!(!got.is_empty());
    for r in &got {
        sim.acknowledge(online, r);
    }
    drain_acking(&mut sim, online);
    // Resuming the offline session delivers what it could keep, in order.
    let (offline, present, got) = connect_v5_persistent(&mut sim, "offline", false, 3600);
    assert!(present);
    for r in &got {
        sim.acknowledge(offline, r);
    }
    drain_acking(&mut sim, offline);
    sim.disconnect(offline, ReasonCode::Success);
    // Clear the retained messages the load left, then the broker serves normally.
    for i in 0..5 {
        sim.publish(p, &format!("load/{i}"), b"", QOS0, true);
    }
    drain_acking(&mut sim, online);
    assert_eq!(sim.broker.retained_count(), 0);
    let id = sim.publish(p, "load/x", b"fine", QOS1, false).unwrap();
    assert_eq!(sim.received(p), [Received::PubAck(id, ReasonCode::Success)]);
    assert_eq!(drain_acking(&mut sim, online), ["fine"]);
}

/// `Config::max_retained` and `max_retained_bytes`: a retained message on a new topic beyond
/// the bound is delivered but not retained; existing topics can still be replaced and
/// cleared.
fn retained_store_bounded<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_retained: 2,
        max_retained_bytes: 64,
        ..Config::default()
    });
    let sub = sim.connect(V5, "sub", true, 0);
    sim.subscribe(sub, "r/#", QOS0);
    let p = sim.connect(V5, "p", true, 0);
    sim.publish(p, "r/1", b"one", QOS0, true);
    sim.publish(p, "r/2", b"two", QOS0, true);
    sim.publish(p, "r/3", b"three", QOS0, true);
    sim.publish(p, "r/big", &[b'x'; 100], QOS0, true);
    assert_eq!(payloads(&sim.received(sub)).len(), 4, "all delivered");
    assert_eq!(sim.broker.retained_count(), 2);
    sim.publish(p, "r/1", b"uno", QOS0, true);
    sim.publish(p, "r/2", b"", QOS0, true);
    sim.publish(p, "r/3", b"tres", QOS0, true);
    sim.received(sub);
    let late = sim.connect(V5, "late", true, 0);
    sim.subscribe(late, "r/#", QOS0);
    let mut got = payloads(&sim.received(late));
    got.sort();
    assert_eq!(got, ["tres", "uno"]);
}

/// The retained byte budget counts what is retained now: replacing, clearing and expiry
/// give bytes back, so the budget never fills up with messages that are gone.
fn retained_bytes_freed_by_replace_clear_and_expiry<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_retained_bytes: 64,
        ..Config::default()
    });
    let p = sim.connect(V5, "p", true, 0);
    let retained_now = |sim: &mut Sim<S>| {
        let late = sim.connect(V5, "late", true, 0);
        sim.subscribe(late, "r/#", QOS0);
        let mut got = payloads(&sim.received(late));
        got.sort();
        sim.disconnect(late, ReasonCode::Success);
        got
    };
    // 40 bytes, replaced ten times by 40 bytes: never more than 40 held.
    for _ in 0..10 {
        sim.publish(p, "r/a", &[b'a'; 40], QOS0, true);
    }
    assert_eq!(retained_now(&mut sim).len(), 1);
    // Cleared: the next 60 bytes fit.
    sim.publish(p, "r/a", b"", QOS0, true);
    sim.publish(p, "r/b", &[b'b'; 60], QOS0, true);
    assert_eq!(
        retained_now(&mut sim),
        [String::from_utf8(vec![b'b'; 60]).unwrap()]
    );
    // Expired after 1 s: its bytes are free again for another 60.
    sim.publish(p, "r/b", b"", QOS0, true);
    let expiry = [Property::MessageExpiryInterval(1)];
    let expiring = Properties::new(&expiry);
    sim.publish_with(p, "r/c", &[b'c'; 60], QOS0, true, expiring);
    sim.advance(Duration::from_secs(2));
    sim.publish(p, "r/d", &[b'd'; 60], QOS0, true);
    assert_eq!(
        retained_now(&mut sim),
        [String::from_utf8(vec![b'd'; 60]).unwrap()]
    );
}

/// A host's count of sessions ([`fulmar_core::broker::Hooks::claim_session`]: shards
/// sharing one `max_sessions`): a new session it refuses gets CONNACK 0x97 Quota exceeded,
/// a resumed session is not counted again, and a session that ends is given back.
#[test]
fn the_hosts_session_count_refuses_new_sessions_and_gets_ended_ones_back() {
    use fulmar_core::broker::{Broker, Growable, Hooks};
    use std::cell::Cell;
    use std::rc::Rc;

    struct Budget(Rc<Cell<usize>>);
    impl Hooks for Budget {
        fn claim_session(&mut self) -> bool {
            let left = self.0.get();
            self.0.set(left.saturating_sub(1));
            left > 0
        }
        fn session_ended(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    let left = Rc::new(Cell::new(2));
    let broker = Broker::<Growable, _>::with_hooks(Config::default(), 1, Budget(left.clone()));
    let mut sim = Sim::with_broker(broker);
    // 3.1.1 without Clean Session: the session outlives the connection.
    let a = sim.connect(V3, "a", false, 0);
    sim.disconnect(a, ReasonCode::Success);
    let b = sim.connect(V5, "b", true, 0);
    assert_eq!(left.get(), 0, "a's stored session and b's online one");
    let c = sim.connect_with(&connect_packet(V5, "c", true, 0));
    assert!(
        matches!(
            sim.received(c).first(),
            Some(Received::ConnAck {
                code: ReasonCode::QuotaExceeded,
                ..
            })
        ),
        "the host refused a third session"
    );
    // Resuming a stored session takes nothing more.
    let a = sim.connect(V3, "a", false, 0);
    assert_eq!(left.get(), 0);
    // b's session ends with its connection: its place comes back, and c gets in.
    sim.disconnect(b, ReasonCode::Success);
    assert_eq!(left.get(), 1);
    let _c = sim.connect(V5, "c", true, 0);
    assert_eq!(left.get(), 0);
    assert!(sim.is_connected(a));
}
