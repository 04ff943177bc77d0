//! `Broker::transmit_needs_durability`: which output a persisting host must hold until the
//! state it reflects is durable (acknowledgements, CONNACK, PUBREL, QoS 2 deliveries), and
//! which may go at once (QoS 0/1 deliveries, PINGRESP) — Invariant 1 of ARCHITECTURE.md
//! without making a persistent subscriber wait for the disk.
#![cfg(feature = "alloc")]

use fulmar_core::broker::{Broker, Config, ConnectionId, Growable};
use fulmar_core::codec::{
    List, Packet, PacketId, ProtocolVersion, Publish, QoS, QoSPid, Subscribe, Subscription,
    SubscriptionOptions, decode,
};
use fulmar_core::sim::connect_packet;
use fulmar_core::time::Instant;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn feed(broker: &mut Broker<Growable>, id: ConnectionId, packet: &Packet<'_>) {
    let mut bytes = vec![0; packet.encoded_len(V5)];
    packet.encode(V5, &mut bytes).expect("encode");
    assert_eq!(broker.handle_bytes(id, &bytes, Instant::ZERO), bytes.len());
}

/// The packet types of one `poll_transmit` and whether they must wait for durability.
fn transmit(broker: &mut Broker<Growable>, id: ConnectionId) -> (Vec<String>, bool) {
    let mut buf = vec![0; 4096];
    let n = broker
        .poll_transmit(id, &mut buf, Instant::ZERO)
        .expect("fits");
    let needs = broker.transmit_needs_durability();
    let mut kinds = Vec::new();
    let mut rest = &buf[..n];
    while !rest.is_empty() {
        let (packet, used) = decode(rest, V5, usize::MAX).expect("decodes");
        let kind = match packet {
            Packet::Publish(p) => format!("PUBLISH qos{}", p.qos() as u8),
            other => format!("{:?}", other.packet_type()),
        };
        kinds.push(kind);
        rest = &rest[used..];
    }
    (kinds, needs)
}

fn client(broker: &mut Broker<Growable>, name: &str) -> ConnectionId {
    let id = broker.handle_connect(Instant::ZERO).expect("room");
    feed(
        broker,
        id,
        &Packet::from(&connect_packet(V5, name, true, 0)),
    );
    id
}

#[test]
fn acknowledgements_and_qos2_wait_qos0_qos1_deliveries_do_not() {
    let mut broker = Broker::<Growable>::new(
        Config {
            persistence: true,
            ..Config::default()
        },
        1,
    );
    let sub = client(&mut broker, "sub");
    assert_eq!(transmit(&mut broker, sub), (vec!["ConnAck".into()], true));
    let filters = [Subscription::new(
        "t/#",
        SubscriptionOptions::qos(QoS::ExactlyOnce),
    )];
    feed(
        &mut broker,
        sub,
        &Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: List::new(&[]),
            subscriptions: List::new(&filters),
        }),
    );
    assert_eq!(transmit(&mut broker, sub), (vec!["SubAck".into()], true));
    let publisher = client(&mut broker, "pub");
    transmit(&mut broker, publisher);

    let publish = |qos_pid, topic| {
        Packet::Publish(Publish {
            dup: false,
            qos_pid,
            retain: false,
            topic,
            properties: Default::default(),
            payload: b"x",
        })
    };
    // QoS 0 and QoS 1 deliveries go at once; the publisher's PUBACK waits.
    feed(&mut broker, publisher, &publish(QoSPid::AtMostOnce, "t/0"));
    assert_eq!(
        transmit(&mut broker, sub),
        (vec!["PUBLISH qos0".into()], false)
    );
    feed(
        &mut broker,
        publisher,
        &publish(QoSPid::AtLeastOnce(pid(1)), "t/1"),
    );
    assert_eq!(
        transmit(&mut broker, sub),
        (vec!["PUBLISH qos1".into()], false)
    );
    assert_eq!(
        transmit(&mut broker, publisher),
        (vec!["PubAck".into()], true)
    );
    // A QoS 2 delivery waits for its packet identifier to be stored, as does PUBREC.
    feed(
        &mut broker,
        publisher,
        &publish(QoSPid::ExactlyOnce(pid(2)), "t/2"),
    );
    let (kinds, needs) = transmit(&mut broker, sub);
    assert_eq!((kinds, needs), (vec!["PUBLISH qos2".into()], true));
    assert_eq!(
        transmit(&mut broker, publisher),
        (vec!["PubRec".into()], true)
    );
    // PINGRESP does not wait.
    feed(&mut broker, sub, &Packet::PingReq);
    assert_eq!(transmit(&mut broker, sub), (vec!["PingResp".into()], false));
    // Nothing written: nothing to wait for.
    assert_eq!(transmit(&mut broker, sub), (vec![], false));
}
