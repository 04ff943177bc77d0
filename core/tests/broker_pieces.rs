//! Output in pieces (`Broker::poll_transmit_pieces`): through buffers of any size, down to
//! one byte, a client receives exactly the bytes `poll_transmit` gives it whole, in 3.1.1
//! and 5.0, at every QoS, with topic aliases, subscription identifiers, message expiry
//! and stored properties (a QoS 0 message's queue entry is gone once it is begun: the
//! message outlives it); a begun PUBLISH is finished before anything else, keeps the
//! expiry it was begun with, and lets its message go when its connection ends.

#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::{QOS2, V3, V5, connect, publish_packet};
use fulmar_core::broker::{Broker, BrokerStorage, Config, ConnectionId};
use fulmar_core::codec::{
    List, Packet, PacketId, Properties, Property, ProtocolVersion, QoS, QoSPid, ReasonCode,
    Subscribe, Subscription, SubscriptionOptions, decode,
};
use fulmar_core::time::{Duration, Instant};

const LIMIT: usize = 8192;

fn broker<S: BrokerStorage>() -> Broker<S> {
    Broker::new(
        Config {
            max_packet_size: 4096,
            ..Config::default()
        },
        7,
    )
}

fn send<S: BrokerStorage>(
    b: &mut Broker<S>,
    conn: ConnectionId,
    packet: &Packet<'_>,
    version: ProtocolVersion,
    now: Instant,
) {
    let bytes = packet.to_vec(version).unwrap();
    assert_eq!(b.handle_bytes(conn, &bytes, now), bytes.len());
}

/// Everything waiting for `conn`, through `poll_transmit` in one large buffer.
fn drain_whole<S: BrokerStorage>(b: &mut Broker<S>, conn: ConnectionId, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; LIMIT];
    loop {
        let n = b.poll_transmit(conn, &mut buf, now).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Everything waiting for `conn`, through `poll_transmit_pieces` in buffers of `size`.
fn drain_pieces<S: BrokerStorage>(
    b: &mut Broker<S>,
    conn: ConnectionId,
    size: usize,
    now: Instant,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; size];
    loop {
        let n = b.poll_transmit_pieces(conn, &mut buf, now).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The packets in `bytes`, which must hold whole packets only.
fn packets(mut bytes: &[u8], version: ProtocolVersion) -> Vec<Packet<'_>> {
    let mut all = Vec::new();
    while !bytes.is_empty() {
        let (packet, used) = decode(bytes, version, LIMIT).unwrap();
        all.push(packet);
        bytes = &bytes[used..];
    }
    all
}

fn subscribe_packet<'a>(
    properties: &'a [Property<'a>],
    subscription: &'a [Subscription<'a>; 1],
) -> Packet<'a> {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::new(properties),
        subscriptions: List::new(subscription),
    })
}

/// A subscriber of `version` (5.0: with Topic Alias Maximum 2 and a subscription
/// identifier) to `t/#` at QoS 2, its CONNACK and SUBACK drained; then a 5.0 publisher
/// sends QoS 0, 1 and 2 messages, small and large, with stored properties, some with an
/// expiry, twice on one topic (an alias is set, then used). Returns the subscriber.
fn scenario<S: BrokerStorage>(b: &mut Broker<S>, version: ProtocolVersion) -> ConnectionId {
    let now = Instant::ZERO;
    let sub = b.handle_connect(now).unwrap();
    let alias_max = [Property::TopicAliasMaximum(2)];
    let props: &[Property<'_>] = if version.is_v5() { &alias_max } else { &[] };
    let c = connect(version, "sub", true, 60, props, None);
    send(b, sub, &Packet::Connect((&c).into()), version, now);
    let subscription = [Subscription::new("t/#", SubscriptionOptions::qos(QOS2))];
    let id = [Property::SubscriptionIdentifier(5)];
    let ids: &[Property<'_>] = if version.is_v5() { &id } else { &[] };
    send(b, sub, &subscribe_packet(ids, &subscription), version, now);
    drain_whole(b, sub, now);

    let publisher = b.handle_connect(now).unwrap();
    let c = connect(V5, "pub", true, 60, &[], None);
    send(b, publisher, &Packet::Connect((&c).into()), V5, now);
    drain_whole(b, publisher, now);
    let large: Vec<u8> = (0..1500).map(|i| (i * 31 % 251) as u8).collect();
    let stored = [
        Property::ContentType("application/octet-stream"),
        Property::UserProperty("k", "v"),
    ];
    let expiring = [Property::MessageExpiryInterval(60)];
    let messages: [(&str, &[u8], QoSPid, &[Property<'_>]); 6] = [
        ("t/small", b"0123456789", QoSPid::AtMostOnce, &[]),
        ("t/large", &large, QoSPid::AtMostOnce, &stored),
        ("t/large", &large, QoSPid::AtLeastOnce(pid(2)), &expiring),
        ("t/large/two", &large, QoSPid::ExactlyOnce(pid(3)), &stored),
        ("t/small", b"after", QoSPid::AtLeastOnce(pid(4)), &[]),
        ("t/empty", b"", QoSPid::AtMostOnce, &[]),
    ];
    for (topic, payload, qos_pid, properties) in messages {
        let p = publish_packet(topic, payload, qos_pid, false, false, properties);
        send(b, publisher, &p, V5, now);
    }
    sub
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).unwrap()
}

fn pieces_match_whole<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut whole = broker::<S>();
        let sub = scenario(&mut whole, version);
        let expected = drain_whole(&mut whole, sub, Instant::ZERO);
        let got = packets(&expected, version);
        assert_eq!(got.len(), 6, "{version:?}: {got:?}");
        for size in [1, 2, 5, 64, 700, 1499, 1600, 4000] {
            let mut pieces = broker::<S>();
            let sub = scenario(&mut pieces, version);
            let out = drain_pieces(&mut pieces, sub, size, Instant::ZERO);
            if out != expected {
                let at = out.iter().zip(&expected).position(|(a, b)| a != b);
                panic!(
                    "{version:?}, pieces of {size}: bytes differ at {at:?} (lengths {} and {}): {:?}",
                    out.len(),
                    expected.len(),
                    packets(&out, version)
                        .iter()
                        .map(|p| match p {
                            Packet::Publish(p) =>
                                format!("{:?} {} {:?}", p.qos_pid, p.topic, p.properties),
                            o => format!("{o:?}"),
                        })
                        .collect::<Vec<_>>()
                );
            }
            assert_eq!(pieces.stats().packets_sent, whole.stats().packets_sent);
            assert_eq!(pieces.stats().bytes_sent, whole.stats().bytes_sent);
        }
    }
}

fn a_begun_publish_keeps_the_expiry_it_was_begun_with<S: BrokerStorage>() {
    let mut b = broker::<S>();
    let mut now = Instant::ZERO;
    let sub = b.handle_connect(now).unwrap();
    let c = connect(V5, "sub", true, 600, &[], None);
    send(&mut b, sub, &Packet::Connect((&c).into()), V5, now);
    let subscription = [Subscription::new(
        "t/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
    )];
    send(&mut b, sub, &subscribe_packet(&[], &subscription), V5, now);
    drain_whole(&mut b, sub, now);
    let publisher = b.handle_connect(now).unwrap();
    let c = connect(V5, "pub", true, 600, &[], None);
    send(&mut b, publisher, &Packet::Connect((&c).into()), V5, now);
    let expiring = [Property::MessageExpiryInterval(60)];
    let p = publish_packet(
        "t/x",
        &[7; 100],
        QoSPid::AtMostOnce,
        false,
        false,
        &expiring,
    );
    send(&mut b, publisher, &p, V5, now);
    // One byte a second: the packet is begun at 1 s and takes over 100 s to go out, its
    // expiry included.
    let mut out = Vec::new();
    let mut buf = [0u8; 1];
    loop {
        now = now + Duration::from_secs(1);
        match b.poll_transmit_pieces(sub, &mut buf, now).unwrap() {
            0 => break,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
    match &packets(&out, V5)[..] {
        [Packet::Publish(p)] => {
            let expiry = p.properties.iter().find_map(|p| match p {
                Property::MessageExpiryInterval(s) => Some(s),
                _ => None,
            });
            assert_eq!(expiry, Some(59));
            assert_eq!(p.payload, [7; 100]);
        }
        other => panic!("{other:?}"),
    }
}

fn a_begun_publish_is_finished_before_a_takeover_disconnect<S: BrokerStorage>() {
    let mut b = broker::<S>();
    let sub = scenario(&mut b, V5);
    let now = Instant::ZERO;
    let mut buf = [0u8; 40];
    let mut out = Vec::new();
    let n = b.poll_transmit_pieces(sub, &mut buf, now).unwrap();
    out.extend_from_slice(&buf[..n]);
    // The same client id connects again: the old connection is taken over [MQTT-3.1.4-3].
    let again = b.handle_connect(now).unwrap();
    let props = [Property::TopicAliasMaximum(2)];
    let c = connect(V5, "sub", true, 60, &props, None);
    send(&mut b, again, &Packet::Connect((&c).into()), V5, now);
    out.extend(drain_pieces(&mut b, sub, 100, now));
    let got = packets(&out, V5);
    match &got[..] {
        [
            Packet::Publish(small),
            Packet::Publish(large),
            Packet::Disconnect(d),
        ] => {
            assert_eq!(small.payload, b"0123456789");
            assert_eq!(large.payload.len(), 1500);
            assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
        }
        other => panic!("{other:?}"),
    }
}

fn a_connection_gone_mid_publish_lets_its_message_go<S: BrokerStorage>() {
    let mut b = broker::<S>();
    let sub = scenario(&mut b, V3);
    let now = Instant::ZERO;
    let mut buf = [0u8; 100];
    // The small message, then the large QoS 0 one begun (its entry already gone).
    b.poll_transmit_pieces(sub, &mut buf, now).unwrap();
    let with_partial = b.stats().messages_stored;
    b.handle_disconnect(sub, now);
    // The clean session ended with the connection: its queued messages and the begun one
    // are all released.
    assert!(with_partial > 0);
    assert_eq!(b.stats().messages_stored, 0);
    assert_eq!(b.stats().deliveries_queued, 0);
}

fn whole_polls_finish_a_begun_publish_first<S: BrokerStorage>() {
    let mut expected_broker = broker::<S>();
    let sub = scenario(&mut expected_broker, V5);
    let expected = drain_whole(&mut expected_broker, sub, Instant::ZERO);

    let mut b = broker::<S>();
    let sub = scenario(&mut b, V5);
    let mut buf = [0u8; 50];
    let n = b
        .poll_transmit_pieces(sub, &mut buf, Instant::ZERO)
        .unwrap();
    let mut out = buf[..n].to_vec();
    out.extend(drain_whole(&mut b, sub, Instant::ZERO));
    assert!(out == expected);
}

fn an_empty_buffer_is_told_what_it_needs_not_that_nothing_waits<S: BrokerStorage>() {
    let mut b = broker::<S>();
    let sub = scenario(&mut b, V5);
    assert!(matches!(
        b.poll_transmit_pieces(sub, &mut [], Instant::ZERO),
        Err(fulmar_core::codec::EncodeError::InsufficientSize { .. })
    ));
    // Nothing was lost: everything still comes out.
    let mut whole = broker::<S>();
    let whole_sub = scenario(&mut whole, V5);
    let expected = drain_whole(&mut whole, whole_sub, Instant::ZERO);
    assert!(drain_pieces(&mut b, sub, 64, Instant::ZERO).len() == expected.len());
}

storage_tests!(
    an_empty_buffer_is_told_what_it_needs_not_that_nothing_waits,
    pieces_match_whole,
    a_begun_publish_keeps_the_expiry_it_was_begun_with,
    a_begun_publish_is_finished_before_a_takeover_disconnect,
    a_connection_gone_mid_publish_lets_its_message_go,
    whole_polls_finish_a_begun_publish_first,
);
