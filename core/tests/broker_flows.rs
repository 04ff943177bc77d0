#![cfg(feature = "alloc")]
//! Scratch: first end-to-end flows through the simulation.
use fulmar_core::broker::{Config, Growable};
use fulmar_core::codec::{ProtocolVersion, QoS, ReasonCode};
use fulmar_core::sim::{Received, Sim};
use fulmar_core::time::Duration;

#[test]
fn qos_flows_retained_will_and_persistent_session() {
    let mut sim = Sim::<Growable>::new(Config::default());
    let sub = sim.connect(ProtocolVersion::V3_1_1, "sub", false, 10);
    assert_eq!(
        sim.subscribe(sub, "a/#", QoS::ExactlyOnce),
        ReasonCode::GrantedQoS2
    );
    let publ = sim.connect(ProtocolVersion::V5, "pub", true, 0);
    let id1 = sim
        .publish(publ, "a/1", b"one", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        sim.received(publ),
        [Received::PubAck(id1, ReasonCode::Success)]
    );
    let got = sim.received(sub);
    assert_eq!(got.len(), 1, "{got:?}");
    sim.acknowledge(sub, &got[0]);
    let id2 = sim
        .publish(publ, "a/2", b"two", QoS::ExactlyOnce, true)
        .unwrap();
    assert_eq!(
        sim.received(publ),
        [Received::PubRec(id2, ReasonCode::Success)]
    );
    let got = sim.received(sub);
    assert!(
        matches!(
            &got[..],
            [Received::Publish {
                qos: QoS::ExactlyOnce,
                ..
            }]
        ),
        "{got:?}"
    );
    sim.acknowledge(sub, &got[0]);
    let rel = sim.received(sub);
    assert!(matches!(&rel[..], [Received::PubRel(..)]), "{rel:?}");
    sim.acknowledge(sub, &rel[0]);
    sim.acknowledge(publ, &Received::PubRec(id2, ReasonCode::Success));
    assert_eq!(
        sim.received(publ),
        [Received::PubComp(id2, ReasonCode::Success)]
    );
    // Retained for a new subscriber.
    let late = sim.connect(ProtocolVersion::V5, "late", true, 0);
    sim.subscribe(late, "a/+", QoS::AtMostOnce);
    let got = sim.received(late);
    assert!(
        matches!(&got[..], [Received::Publish { retain: true, payload, .. }] if payload == b"two"),
        "{got:?}"
    );
    // Persistent session: offline queue.
    sim.drop_connection(sub);
    sim.publish(publ, "a/3", b"three", QoS::AtLeastOnce, false);
    let back = sim.connect_with(&fulmar_core::sim::connect_packet(
        ProtocolVersion::V3_1_1,
        "sub",
        false,
        10,
    ));
    let got = sim.received(back);
    assert!(
        matches!(
            &got[0],
            Received::ConnAck {
                session_present: true,
                ..
            }
        ),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], Received::Publish { payload, .. } if payload == b"three"),
        "{got:?}"
    );
    // Keep alive: 1.5 x 10 s without a packet closes.
    sim.advance(Duration::from_secs(16));
    assert!(!sim.is_connected(back));
}

#[test]
fn outbound_topic_aliases_up_to_the_clients_maximum() {
    use fulmar_core::codec::{List, Property};
    let mut sim = Sim::<Growable>::new(Config::default());
    // §3.3.2.3.4: the client allows 2 aliases; the broker may use them for its PUBLISHes.
    let props = [Property::TopicAliasMaximum(2)];
    let mut connect = fulmar_core::sim::connect_packet(ProtocolVersion::V5, "aliased", true, 0);
    connect.properties = List::new(&props);
    let sub = sim.connect_with(&connect);
    sim.received(sub);
    sim.subscribe(sub, "#", QoS::AtMostOnce);
    let publ = sim.connect(ProtocolVersion::V3_1_1, "p", true, 0);
    for topic in ["t/one", "t/two", "t/three", "t/one", "t/two", "t/three"] {
        sim.publish(publ, topic, b"x", QoS::AtMostOnce, false);
    }
    let got: Vec<(String, Option<u16>)> = sim
        .received(sub)
        .into_iter()
        .filter_map(|r| match r {
            Received::Publish {
                topic, topic_alias, ..
            } => Some((topic, topic_alias)),
            _ => None,
        })
        .collect();
    let expect = [
        ("t/one", Some(1)),
        ("t/two", Some(2)),
        ("t/three", None),
        ("t/one", Some(1)),
        ("t/two", Some(2)),
        ("t/three", None),
    ];
    let expect: Vec<(String, Option<u16>)> =
        expect.iter().map(|(t, a)| (t.to_string(), *a)).collect();
    assert_eq!(got, expect);
}

#[test]
fn a_packet_larger_than_the_transmit_buffer_is_kept_and_sized() {
    use fulmar_core::broker::{Broker, Event};
    use fulmar_core::codec::{EncodeError, Packet};
    let mut broker = Broker::<Growable>::new(Config::default(), 1);
    let now = fulmar_core::time::Instant::ZERO;
    let encode = |p: &Packet<'_>, v| {
        let mut b = vec![0; p.encoded_len(v)];
        p.encode(v, &mut b).unwrap();
        b
    };
    let sub = broker.handle_connect(now).unwrap();
    let connect = fulmar_core::sim::connect_packet(ProtocolVersion::V3_1_1, "s", true, 0);
    broker.handle_bytes(
        sub,
        &encode(&Packet::from(&connect), ProtocolVersion::V3_1_1),
        now,
    );
    let subs = [fulmar_core::codec::Subscription::new(
        "big",
        fulmar_core::codec::SubscriptionOptions::default(),
    )];
    let subscribe = Packet::Subscribe(fulmar_core::codec::Subscribe {
        packet_id: fulmar_core::codec::PacketId::MIN,
        properties: fulmar_core::codec::Properties::empty(),
        subscriptions: fulmar_core::codec::List::new(&subs),
    });
    broker.handle_bytes(sub, &encode(&subscribe, ProtocolVersion::V3_1_1), now);
    let mut big = vec![0u8; 4096];
    while broker.poll_event().is_some() {}
    while broker.poll_transmit(sub, &mut big, now).unwrap() > 0 {}
    broker
        .publish("big", &[7u8; 1000], QoS::AtMostOnce, false, now)
        .unwrap();
    assert_eq!(broker.poll_event(), Some(Event::Transmit(sub)));
    // Too small: nothing is written and nothing is lost; the error says what is needed.
    let mut small = [0u8; 100];
    let Err(EncodeError::InsufficientSize { required }) =
        broker.poll_transmit(sub, &mut small, now)
    else {
        panic!("expected InsufficientSize");
    };
    assert!(required > 1000);
    let n = broker.poll_transmit(sub, &mut big, now).unwrap();
    assert_eq!(n, required);
    let (packet, _) =
        fulmar_core::codec::decode(&big[..n], ProtocolVersion::V3_1_1, usize::MAX).unwrap();
    assert!(matches!(packet, Packet::Publish(p) if p.payload.len() == 1000));
}
