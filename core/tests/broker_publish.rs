//! PUBLISH in both directions (MQTT 3.1.1 §3.3–3.7 and §4.3, MQTT 5.0 §3.3–3.7 and §4.3):
//! the exact acknowledgment sequences of QoS 0/1/2, QoS 2 duplicates, QoS downgrade, Receive
//! Maximum both ways, retained messages and Retain Handling, No Local, Subscription
//! Identifiers, Message Expiry, the client's Maximum Packet Size, topic aliases, `$` topics,
//! shared subscriptions and publish authorization. Every test runs on both storage
//! back-ends.
#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config};
use fulmar_core::codec::{
    Ack, Packet, PacketId, Properties, Property, QoSPid, ReasonCode, RetainHandling,
    SubscriptionOptions,
};
use fulmar_core::sim::{Received, Sim, connect_packet};

storage_tests!(
    qos0_both_directions,
    qos1_exact_sequence,
    qos2_exact_sequence,
    qos2_duplicate_before_pubrel_is_not_delivered_twice,
    qos2_stray_pubrel_gets_pubcomp,
    qos_downgraded_to_subscription_maximum,
    no_matching_subscribers_v5,
    receive_maximum_limits_outbound_inflight,
    v3_inflight_window_from_config,
    server_receive_maximum_inbound,
    receive_maximum_does_not_apply_to_3_1_1,
    packet_ids_never_reuse_one_in_flight,
    retained_set_replace_clear,
    retained_flag_on_normal_delivery,
    retain_handling_options,
    retained_expires,
    no_local,
    overlapping_subscriptions_one_message_with_identifiers,
    subscription_identifier_on_retained,
    message_expiry_while_offline,
    client_maximum_packet_size,
    topic_alias_inbound,
    topic_alias_errors,
    topic_alias_not_carried_to_next_connection,
    wildcard_topic_name_closes,
    dollar_topics_not_matched_by_wildcards,
    shared_subscription_round_robin,
    unauthorized_publish,
    publish_order_kept,
    retain_unavailable,
);

/// A subscriber per version on `t` with `qos`, and a publisher per version.
fn four_clients<S: BrokerStorage>(
    sim: &mut Sim<S>,
    qos: fulmar_core::codec::QoS,
) -> [fulmar_core::sim::ClientHandle; 4] {
    let s3 = sim.connect(V3, "s3", true, 0);
    let s5 = sim.connect(V5, "s5", true, 0);
    sim.subscribe(s3, "t", qos);
    sim.subscribe(s5, "t", qos);
    let p3 = sim.connect(V3, "p3", true, 0);
    let p5 = sim.connect(V5, "p5", true, 0);
    [s3, s5, p3, p5]
}

/// [MQTT-4.3.1-1]: QoS 0 is sent with QoS 0 and no packet identifier, and nothing comes
/// back to the publisher.
fn qos0_both_directions<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let [s3, s5, p3, p5] = four_clients(&mut sim, QOS2);
    for publisher in [p3, p5] {
        sim.publish(publisher, "t", b"zero", QOS0, false);
        assert_eq!(sim.received(publisher), []);
        for subscriber in [s3, s5] {
            let got = sim.received(subscriber);
            assert!(
                matches!(&got[..], [Received::Publish { qos: QOS0, packet_id: None, dup: false, retain: false, payload, .. }] if payload == b"zero"),
                "{got:?}"
            );
        }
    }
}

/// §4.3.2: a QoS 1 PUBLISH is answered with PUBACK carrying its identifier
/// (3.1.1 [MQTT-4.3.2-2], 5.0 [MQTT-4.3.2-4]); the subscriber gets it with QoS 1 and a
/// fresh identifier ([MQTT-4.3.2-1]) and, once it answers PUBACK, nothing more.
fn qos1_exact_sequence<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let [s3, s5, p3, p5] = four_clients(&mut sim, QOS1);
    for publisher in [p3, p5] {
        let id = sim.publish(publisher, "t", b"one", QOS1, false).unwrap();
        assert_eq!(
            sim.received(publisher),
            [Received::PubAck(id, ReasonCode::Success)]
        );
        for subscriber in [s3, s5] {
            let got = single_publish(&sim.received(subscriber));
            assert!(
                matches!(
                    &got,
                    Received::Publish {
                        qos: QOS1,
                        packet_id: Some(_),
                        dup: false,
                        ..
                    }
                ),
                "{got:?}"
            );
            sim.acknowledge(subscriber, &got);
            assert_eq!(sim.received(subscriber), []);
        }
    }
    for id in ["s3", "s5"] {
        assert_eq!(sim.broker.session(id).unwrap().queue_len(), 0);
    }
}

/// §4.3.3 (both versions; 3.1.1 [MQTT-4.3.3-1] for the sender, [MQTT-4.3.3-2] for the
/// receiver): PUBLISH → PUBREC, PUBREL → PUBCOMP, each with the identifier.
fn qos2_exact_sequence<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let [s3, s5, p3, p5] = four_clients(&mut sim, QOS2);
    for publisher in [p3, p5] {
        let id = sim.publish(publisher, "t", b"two", QOS2, false).unwrap();
        assert_eq!(
            sim.received(publisher),
            [Received::PubRec(id, ReasonCode::Success)]
        );
        for subscriber in [s3, s5] {
            let got = single_publish(&sim.received(subscriber));
            assert!(
                matches!(
                    &got,
                    Received::Publish {
                        qos: QOS2,
                        dup: false,
                        ..
                    }
                ),
                "{got:?}"
            );
            let out_id = pid_of(&got);
            sim.acknowledge(subscriber, &got);
            assert_eq!(
                sim.received(subscriber),
                [Received::PubRel(out_id, ReasonCode::Success)]
            );
            sim.acknowledge(subscriber, &Received::PubRel(out_id, ReasonCode::Success));
            assert_eq!(sim.received(subscriber), []);
        }
        sim.send(publisher, &Packet::PubRel(Ack::new(id)));
        assert_eq!(
            sim.received(publisher),
            [Received::PubComp(id, ReasonCode::Success)]
        );
    }
}

/// §4.3.3 method B (3.1.1 [MQTT-4.3.3-2], 5.0 [MQTT-4.3.3-10]): until PUBREL, a
/// PUBLISH with the same identifier (DUP=1) is answered with PUBREC again and not
/// delivered again; after PUBREL the identifier is a new message.
fn qos2_duplicate_before_pubrel_is_not_delivered_twice<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let sub = sim.connect(V5, "sub", true, 0);
        sim.subscribe(sub, "t", QOS2);
        let publisher = sim.connect(version, "pub", true, 0);
        let id = PacketId::new(7).unwrap();
        sim.send(
            publisher,
            &publish_packet("t", b"once", QoSPid::ExactlyOnce(id), false, false, &[]),
        );
        assert_eq!(
            sim.received(publisher),
            [Received::PubRec(id, ReasonCode::Success)]
        );
        assert_eq!(payloads(&sim.received(sub)), ["once"]);
        for _ in 0..2 {
            sim.send(
                publisher,
                &publish_packet("t", b"once", QoSPid::ExactlyOnce(id), true, false, &[]),
            );
            assert_eq!(
                sim.received(publisher),
                [Received::PubRec(id, ReasonCode::Success)]
            );
            assert_eq!(sim.received(sub), [], "{version}: delivered twice");
        }
        sim.send(publisher, &Packet::PubRel(Ack::new(id)));
        assert_eq!(
            sim.received(publisher),
            [Received::PubComp(id, ReasonCode::Success)]
        );
        // Released: the same identifier now carries a new message.
        sim.send(
            publisher,
            &publish_packet("t", b"again", QoSPid::ExactlyOnce(id), false, false, &[]),
        );
        assert_eq!(payloads(&sim.received(sub)), ["again"]);
    }
}

/// 5.0 §3.7.2.1: a PUBREL for an unknown identifier is answered PUBCOMP 0x92 Packet
/// Identifier not found (3.1.1 §3.6.4: PUBREL is answered by PUBCOMP); the connection
/// stays up.
fn qos2_stray_pubrel_gets_pubcomp<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "c", true, 0);
        let id = PacketId::new(99).unwrap();
        sim.send(c, &Packet::PubRel(Ack::new(id)));
        let code = if version.is_v5() {
            ReasonCode::PacketIdentifierNotFound
        } else {
            ReasonCode::Success
        };
        assert_eq!(sim.received(c), [Received::PubComp(id, code)]);
        assert!(sim.is_connected(c));
    }
}

/// [MQTT-3.8.4-6] (3.1.1 §3.8.4) / [MQTT-3.8.4-8] (5.0): a message goes out with the lower
/// of its QoS and the subscription's granted QoS.
fn qos_downgraded_to_subscription_maximum<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let q0 = sim.connect(version, "q0", true, 0);
        let q1 = sim.connect(version, "q1", true, 0);
        sim.subscribe(q0, "t", QOS0);
        sim.subscribe(q1, "t", QOS1);
        let publisher = sim.connect(version, "p", true, 0);
        sim.publish(publisher, "t", b"x", QOS2, false);
        let got = single_publish(&sim.received(q0));
        assert!(matches!(
            got,
            Received::Publish {
                qos: QOS0,
                packet_id: None,
                ..
            }
        ));
        let got = single_publish(&sim.received(q1));
        assert!(matches!(
            got,
            Received::Publish {
                qos: QOS1,
                packet_id: Some(_),
                ..
            }
        ));
        // And never upgraded: a QoS 0 message to a QoS 1 subscription stays QoS 0.
        sim.publish(publisher, "t", b"y", QOS0, false);
        let got = single_publish(&sim.received(q1));
        assert!(matches!(got, Received::Publish { qos: QOS0, .. }));
    }
}

/// 5.0 §3.4.2.1 / §3.5.2.1: 0x10 No matching subscribers on PUBACK and PUBREC when nobody
/// subscribed; 3.1.1 has no such code.
fn no_matching_subscribers_v5<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let c5 = sim.connect(V5, "c5", true, 0);
    let c3 = sim.connect(V3, "c3", true, 0);
    let id = sim.publish(c5, "nobody", b"x", QOS1, false).unwrap();
    assert_eq!(
        sim.received(c5),
        [Received::PubAck(id, ReasonCode::NoMatchingSubscribers)]
    );
    let id = sim.publish(c5, "nobody", b"x", QOS2, false).unwrap();
    assert_eq!(
        sim.received(c5),
        [Received::PubRec(id, ReasonCode::NoMatchingSubscribers)]
    );
    let id = sim.publish(c3, "nobody", b"x", QOS1, false).unwrap();
    assert_eq!(
        sim.received(c3),
        [Received::PubAck(id, ReasonCode::Success)]
    );
}

/// 5.0 [MQTT-3.3.4-7]: no more QoS 1/2 PUBLISHes awaiting acknowledgment than the client's
/// Receive Maximum; the rest wait in order and go out as acknowledgments arrive (§4.9: a
/// QoS 2 message counts until its PUBCOMP).
fn receive_maximum_limits_outbound_inflight<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let props = [Property::ReceiveMaximum(2)];
    let (sub, _) = connect_ok(&mut sim, &connect(V5, "sub", true, 0, &props, None));
    sim.subscribe(sub, "t", QOS2);
    let publisher = sim.connect(V5, "p", true, 0);
    for (i, qos) in [QOS1, QOS2, QOS1, QOS2, QOS1].into_iter().enumerate() {
        sim.publish(publisher, "t", format!("m{i}").as_bytes(), qos, false);
    }
    let first = sim.received(sub);
    assert_eq!(payloads(&first), ["m0", "m1"]);
    // Still blocked: nothing more without acknowledgments.
    sim.advance(secs(30));
    assert_eq!(sim.received(sub), []);
    // PUBACK of m0 frees one place.
    sim.acknowledge(sub, &first[0]);
    let got = sim.received(sub);
    assert_eq!(payloads(&got), ["m2"]);
    let m2 = got[0].clone();
    // PUBREC of m1 keeps its place until PUBCOMP (§4.9: counted until PUBCOMP).
    sim.acknowledge(sub, &first[1]);
    let rel = sim.received(sub);
    assert!(matches!(&rel[..], [Received::PubRel(..)]), "{rel:?}");
    sim.acknowledge(sub, &rel[0]);
    let got = sim.received(sub);
    assert_eq!(payloads(&got), ["m3"]);
    // Two in flight again (m2, m3): m4 waits for one of them.
    sim.acknowledge(sub, &got[0]);
    assert!(matches!(&sim.received(sub)[..], [Received::PubRel(..)]));
    sim.acknowledge(sub, &m2);
    assert_eq!(drain_acking(&mut sim, sub), ["m4"]);
}

/// [MQTT-2.2.1-3]: a packet identifier is not reused while its delivery is in flight,
/// even when the identifiers wrap around: one message left unacknowledged while 70 000
/// others go through keeps its identifier to itself.
fn packet_ids_never_reuse_one_in_flight<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let props = [Property::ReceiveMaximum(2)];
    let (sub, _) = connect_ok(&mut sim, &connect(V5, "sub", true, 0, &props, None));
    sim.subscribe(sub, "t", QOS1);
    let publisher = sim.connect(V5, "p", true, 0);
    let packet_id = |got: &[Received]| match got {
        [Received::Publish { packet_id, .. }] => packet_id.expect("QoS 1 has an identifier"),
        _ => panic!("expected one PUBLISH, got {got:?}"),
    };
    sim.publish(publisher, "t", b"held", QOS1, false);
    let held = packet_id(&sim.received(sub));
    for i in 0..70_000u32 {
        sim.publish(publisher, "t", &i.to_be_bytes(), QOS1, false);
        let got = sim.received(sub);
        assert_ne!(packet_id(&got), held, "message {i}");
        sim.acknowledge(sub, &got[0]);
        if i % 1000 == 0 {
            sim.received(publisher);
        }
    }
}

/// 3.1.1 has no Receive Maximum; `Config::max_inflight` bounds the window (as Mosquitto's
/// `max_inflight_messages`), keeping the order.
fn v3_inflight_window_from_config<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_inflight: 1,
        ..Config::default()
    });
    let sub = sim.connect(V3, "sub", true, 0);
    sim.subscribe(sub, "t", QOS1);
    let publisher = sim.connect(V3, "p", true, 0);
    for i in 0..3 {
        sim.publish(publisher, "t", format!("m{i}").as_bytes(), QOS1, false);
    }
    let got = sim.received(sub);
    assert_eq!(payloads(&got), ["m0"]);
    sim.acknowledge(sub, &got[0]);
    assert_eq!(drain_acking(&mut sim, sub), ["m1", "m2"]);
}

/// 5.0 [MQTT-3.3.4-9], §3.2.2.3.3: a client that sends more unacknowledged QoS 2
/// PUBLISHes than the server's Receive Maximum is disconnected with 0x93.
fn server_receive_maximum_inbound<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        receive_maximum: 2,
        ..Config::default()
    });
    let c = sim.connect_with(&connect_packet(V5, "p", true, 0));
    assert!(matches!(
        &sim.received(c)[..],
        [Received::ConnAck {
            receive_maximum: Some(2),
            ..
        }]
    ));
    let other = sim.connect(V5, "other", true, 0);
    let a = sim.publish(c, "t", b"1", QOS2, false).unwrap();
    let b = sim.publish(c, "t", b"2", QOS2, false).unwrap();
    assert_eq!(
        sim.received(c),
        [
            Received::PubRec(a, ReasonCode::NoMatchingSubscribers),
            Received::PubRec(b, ReasonCode::NoMatchingSubscribers)
        ]
    );
    // A release frees a place...
    sim.send(c, &Packet::PubRel(Ack::new(a)));
    assert_eq!(sim.received(c), [Received::PubComp(a, ReasonCode::Success)]);
    sim.publish(c, "t", b"3", QOS2, false).unwrap();
    sim.received(c);
    // ...and a third unreleased one is too many.
    sim.publish(c, "t", b"4", QOS2, false).unwrap();
    assert_closed_with(&mut sim, c, V5, ReasonCode::ReceiveMaximumExceeded);
    assert!(sim.is_connected(other));
}

/// The server's Receive Maximum is a 5.0 limit ([MQTT-3.3.4-7]): a 3.1.1 client was never
/// told it, so more unacknowledged QoS 2 PUBLISHes than that are served, not refused.
fn receive_maximum_does_not_apply_to_3_1_1<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        receive_maximum: 2,
        ..Config::default()
    });
    let c = sim.connect(V3, "p", true, 0);
    let pids: Vec<_> = (0..5)
        .filter_map(|i| sim.publish(c, "t", format!("m{i}").as_bytes(), QOS2, false))
        .collect();
    let recs = sim
        .received(c)
        .iter()
        .filter(|r| matches!(r, Received::PubRec(_, ReasonCode::Success)))
        .count();
    assert_eq!(recs, 5);
    assert!(sim.is_connected(c));
    for pid in pids {
        sim.send(c, &Packet::PubRel(Ack::new(pid)));
    }
    assert_eq!(sim.received(c).len(), 5, "five PUBCOMPs");
}

/// Retained messages: 3.1.1 [MQTT-3.3.1-5] / 5.0 [MQTT-3.3.1-5]: stored, replacing the
/// previous one on the topic; sent to a new subscriber with RETAIN=1 (3.1.1
/// [MQTT-3.3.1-8], 5.0 §3.3.1.3). An empty payload clears it (3.1.1
/// [MQTT-3.3.1-10], [MQTT-3.3.1-11]; 5.0 [MQTT-3.3.1-6], [MQTT-3.3.1-7]) and is still
/// delivered to current subscribers as a normal message.
fn retained_set_replace_clear<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let publisher = sim.connect(version, "p", true, 0);
        sim.publish(publisher, "r/1", b"one", QOS1, true);
        sim.publish(publisher, "r/1", b"two", QOS1, true);
        sim.publish(publisher, "r/2", b"other", QOS0, true);
        sim.received(publisher);
        assert_eq!(sim.broker.retained_count(), 2);

        let sub = sim.connect(version, "s", true, 0);
        sim.subscribe(sub, "r/1", QOS1);
        let got = messages(&sim.received(sub));
        assert_eq!(
            got,
            [Msg {
                topic: "r/1".into(),
                payload: b"two".to_vec(),
                qos: QOS1,
                retain: true,
                dup: false
            }],
            "{version}"
        );

        sim.publish(publisher, "r/1", b"", QOS0, true);
        let got = messages(&sim.received(sub));
        assert_eq!(got.len(), 1, "{version}: the clearing message is delivered");
        assert!(got[0].payload.is_empty() && !got[0].retain);
        assert_eq!(sim.broker.retained_count(), 1);

        let late = sim.connect(version, "late", true, 0);
        sim.subscribe(late, "r/#", QOS0);
        assert_eq!(payloads(&sim.received(late)), ["other"]);
    }
}

/// 3.1.1 [MQTT-3.3.1-9]: a message sent because it matches an established subscription has
/// RETAIN=0 however it was published. 5.0 [MQTT-3.3.1-12]: the same with Retain As
/// Published 0; [MQTT-3.3.1-13]: with Retain As Published 1 it keeps the publisher's flag.
fn retained_flag_on_normal_delivery<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let s3 = sim.connect(V3, "s3", true, 0);
    let s5 = sim.connect(V5, "s5", true, 0);
    let rap = sim.connect(V5, "rap", true, 0);
    sim.subscribe(s3, "t", QOS0);
    sim.subscribe(s5, "t", QOS0);
    let options = SubscriptionOptions {
        retain_as_published: true,
        ..SubscriptionOptions::qos(QOS0)
    };
    sim.subscribe_with(rap, "t", options, None);
    let publisher = sim.connect(V5, "p", true, 0);
    sim.publish(publisher, "t", b"kept", QOS0, true);
    sim.publish(publisher, "t", b"plain", QOS0, false);
    let flags =
        |got: Vec<Received>| -> Vec<bool> { messages(&got).iter().map(|m| m.retain).collect() };
    assert_eq!(flags(sim.received(s3)), [false, false]);
    assert_eq!(flags(sim.received(s5)), [false, false]);
    assert_eq!(flags(sim.received(rap)), [true, false]);
}

/// 5.0 §3.8.3.1 Retain Handling: 0 sends retained messages at every subscribe
/// ([MQTT-3.3.1-9]), 1 only when the subscription is new ([MQTT-3.3.1-10]), 2 never
/// ([MQTT-3.3.1-11]). 3.1.1 [MQTT-3.8.4-3]: re-subscribing resends them.
fn retain_handling_options<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let publisher = sim.connect(V5, "p", true, 0);
    sim.publish(publisher, "r", b"kept", QOS0, true);
    let with = |handling| SubscriptionOptions {
        retain_handling: handling,
        ..SubscriptionOptions::qos(QOS1)
    };
    let c = sim.connect(V5, "c", true, 0);
    for (handling, first, again) in [
        (RetainHandling::SendOnSubscribe, 1, 1),
        (RetainHandling::SendIfNew, 1, 0),
        (RetainHandling::DoNotSend, 0, 0),
    ] {
        sim.subscribe_with(c, "r", with(handling), None);
        let n = drain_acking(&mut sim, c).len();
        assert_eq!(n, first, "{handling:?}, first subscribe");
        sim.subscribe_with(c, "r", with(handling), None);
        let n = drain_acking(&mut sim, c).len();
        assert_eq!(n, again, "{handling:?}, second subscribe");
        sim.unsubscribe(c, "r");
    }
    let v3 = sim.connect(V3, "v3", true, 0);
    for _ in 0..2 {
        sim.subscribe(v3, "r", QOS0);
        assert_eq!(payloads(&sim.received(v3)), ["kept"]);
    }
}

/// 5.0 [MQTT-3.3.2-5]: a retained message whose Message Expiry Interval has passed is not
/// sent to new subscribers.
fn retained_expires<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let publisher = sim.connect(V5, "p", true, 0);
    let expiry = [Property::MessageExpiryInterval(10)];
    sim.publish_with(
        publisher,
        "r",
        b"short",
        QOS0,
        true,
        Properties::new(&expiry),
    );
    let early = sim.connect(V5, "early", true, 0);
    sim.advance(secs(4));
    sim.subscribe(early, "r", QOS0);
    let got = sim.received(early);
    assert!(
        matches!(
            &got[..],
            [Received::Publish {
                message_expiry: Some(6),
                retain: true,
                ..
            }]
        ),
        "{got:?}"
    );
    sim.advance(secs(7));
    let late = sim.connect(V5, "late", true, 0);
    sim.subscribe(late, "r", QOS0);
    assert_eq!(sim.received(late), []);
    // Expired, it no longer counts against the retained limits either.
    assert_eq!(sim.broker.retained_count(), 0);
}

/// 5.0 [MQTT-3.8.3-3]: with No Local a client does not receive its own messages; without it,
/// it does (3.1.1 always does).
fn no_local<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let nl = sim.connect(V5, "nl", true, 0);
    let options = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::qos(QOS1)
    };
    sim.subscribe_with(nl, "t", options, None);
    let echo = sim.connect(V5, "echo", true, 0);
    sim.subscribe(echo, "t", QOS0);
    let v3 = sim.connect(V3, "v3", true, 0);
    sim.subscribe(v3, "t", QOS0);

    sim.publish(nl, "t", b"from-nl", QOS1, false);
    let acks = sim.received(nl);
    assert!(
        matches!(&acks[..], [Received::PubAck(_, ReasonCode::Success)]),
        "{acks:?}"
    );
    assert_eq!(payloads(&sim.received(echo)), ["from-nl"]);
    sim.publish(echo, "t", b"from-echo", QOS0, false);
    assert_eq!(payloads(&sim.received(echo)), ["from-echo"]);
    assert_eq!(drain_acking(&mut sim, nl), ["from-echo"]);
    assert_eq!(payloads(&sim.received(v3)), ["from-nl", "from-echo"]);
    sim.publish(v3, "t", b"from-v3", QOS0, false);
    assert_eq!(payloads(&sim.received(v3)), ["from-v3"]);
}

/// 5.0 [MQTT-3.3.4-2]: overlapping subscriptions of one client → the message once, at the
/// highest QoS of them; [MQTT-3.3.4-3]: carrying every Subscription Identifier. 3.1.1
/// [MQTT-3.3.5-1]: delivered with the maximum QoS of the matching subscriptions.
fn overlapping_subscriptions_one_message_with_identifiers<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let c = sim.connect(V5, "c", true, 0);
    sim.subscribe_with(c, "a/+", SubscriptionOptions::qos(QOS0), Some(1));
    sim.subscribe_with(c, "a/#", SubscriptionOptions::qos(QOS1), Some(2));
    sim.subscribe_with(c, "b/#", SubscriptionOptions::qos(QOS1), None);
    let v3 = sim.connect(V3, "v3", true, 0);
    sim.subscribe(v3, "a/+", QOS0);
    sim.subscribe(v3, "a/#", QOS1);
    let publisher = sim.connect(V5, "p", true, 0);
    sim.publish(publisher, "a/b", b"x", QOS2, false);
    let got = single_publish(&sim.received(c));
    match &got {
        Received::Publish {
            qos,
            subscription_ids,
            ..
        } => {
            assert_eq!(*qos, QOS1);
            let mut ids = subscription_ids.clone();
            ids.sort();
            assert_eq!(ids, [1, 2]);
        }
        _ => unreachable!(),
    }
    let got = single_publish(&sim.received(v3));
    assert!(matches!(got, Received::Publish { qos: QOS1, .. }));
    // No identifier on a subscription made without one.
    sim.publish(publisher, "b/c", b"y", QOS0, false);
    let got = single_publish(&sim.received(c));
    assert!(
        matches!(&got, Received::Publish { subscription_ids, .. } if subscription_ids.is_empty())
    );
}

/// 5.0 [MQTT-3.3.4-3]: a retained message sent because of a subscription carries that
/// subscription's identifier.
fn subscription_identifier_on_retained<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let publisher = sim.connect(V5, "p", true, 0);
    sim.publish(publisher, "r", b"kept", QOS0, true);
    let c = sim.connect(V5, "c", true, 0);
    sim.subscribe_with(c, "r", SubscriptionOptions::qos(QOS0), Some(42));
    let got = single_publish(&sim.received(c));
    assert!(
        matches!(&got, Received::Publish { subscription_ids, retain: true, .. } if subscription_ids == &[42]),
        "{got:?}"
    );
}

/// 5.0 [MQTT-3.3.2-5]: a message whose expiry passes while it waits for an offline
/// subscriber is not delivered; [MQTT-3.3.2-6]: one still valid goes out with the
/// interval minus the time it waited.
fn message_expiry_while_offline<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let (sub, _, _) = connect_v5_persistent(&mut sim, "sub", true, 3600);
    sim.subscribe(sub, "t", QOS1);
    sim.disconnect(sub, ReasonCode::Success);
    let publisher = sim.connect(V5, "p", true, 0);
    let short = [Property::MessageExpiryInterval(10)];
    let long = [Property::MessageExpiryInterval(100)];
    sim.publish_with(
        publisher,
        "t",
        b"short",
        QOS1,
        false,
        Properties::new(&short),
    );
    sim.publish_with(publisher, "t", b"long", QOS1, false, Properties::new(&long));
    sim.publish(publisher, "t", b"forever", QOS1, false);
    sim.advance(secs(30));
    let (_, present, got) = connect_v5_persistent(&mut sim, "sub", false, 3600);
    assert!(present);
    let expiries: Vec<(String, Option<u32>)> = got
        .iter()
        .filter_map(|r| match r {
            Received::Publish {
                payload,
                message_expiry,
                ..
            } => Some((
                String::from_utf8_lossy(payload).into_owned(),
                *message_expiry,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        expiries,
        [
            ("long".to_string(), Some(70)),
            ("forever".to_string(), None)
        ]
    );
    assert_eq!(sim.broker.stats().messages_expired, 1);
}

/// 5.0 [MQTT-3.1.2-24]: the server never sends a packet larger than the client's Maximum
/// Packet Size; [MQTT-3.1.2-25]: such a message is discarded for that client as if sent,
/// others still get it, and what follows is not held up.
fn client_maximum_packet_size<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let props = [Property::MaximumPacketSize(64)];
    let (small, _) = connect_ok(&mut sim, &connect(V5, "small", true, 0, &props, None));
    let big = sim.connect(V5, "big", true, 0);
    for c in [small, big] {
        sim.subscribe(c, "t", QOS1);
    }
    let publisher = sim.connect(V5, "p", true, 0);
    let large = vec![b'x'; 200];
    sim.publish(publisher, "t", &large, QOS1, false);
    sim.publish(publisher, "t", b"tiny", QOS1, false);
    assert_eq!(drain_acking(&mut sim, small), ["tiny"]);
    let got = drain_acking(&mut sim, big);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], "tiny");
    assert_eq!(sim.broker.stats().messages_oversized, 1);
}

/// 5.0 §3.3.2.3.4: a Topic Alias with a topic sets the mapping, a Topic Alias with an empty
/// topic uses it, and a new topic for the same alias replaces it. The subscriber receives
/// the full topic (the server set no alias towards it).
fn topic_alias_inbound<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let sub = sim.connect(V5, "sub", true, 0);
    sim.subscribe(sub, "#", QOS0);
    let p = sim.connect(V5, "p", true, 0);
    let alias = [Property::TopicAlias(1)];
    sim.publish_with(
        p,
        "long/topic/name",
        b"set",
        QOS0,
        false,
        Properties::new(&alias),
    );
    sim.publish_with(p, "", b"use", QOS1, false, Properties::new(&alias));
    sim.publish_with(p, "other", b"remap", QOS0, false, Properties::new(&alias));
    sim.publish_with(p, "", b"use2", QOS0, false, Properties::new(&alias));
    let acks = sim.received(p);
    assert!(
        matches!(&acks[..], [Received::PubAck(_, ReasonCode::Success)]),
        "{acks:?}"
    );
    let got: Vec<(String, String)> = messages(&sim.received(sub))
        .into_iter()
        .map(|m| (m.topic, String::from_utf8_lossy(&m.payload).into_owned()))
        .collect();
    let expect = [
        ("long/topic/name", "set"),
        ("long/topic/name", "use"),
        ("other", "remap"),
        ("other", "use2"),
    ]
    .map(|(t, p)| (t.to_string(), p.to_string()));
    assert_eq!(got, expect);
}

/// 5.0 [MQTT-3.3.2-8]: Topic Alias 0 and [MQTT-3.3.2-9]: one above the server's Topic
/// Alias Maximum are errors → DISCONNECT 0x94; an alias never set used with an empty topic
/// is a protocol error → DISCONNECT 0x82 (§3.3.2.3.4). Other clients are unaffected.
fn topic_alias_errors<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        topic_alias_maximum: 4,
        ..Config::default()
    });
    let bystander = sim.connect(V5, "b", true, 0);
    sim.subscribe(bystander, "t", QOS0);
    for (alias, topic, reason) in [
        (0u16, "t", ReasonCode::TopicAliasInvalid),
        (5, "t", ReasonCode::TopicAliasInvalid),
        (3, "", ReasonCode::ProtocolError),
    ] {
        let c = sim.connect(V5, "c", true, 0);
        let props = [Property::TopicAlias(alias)];
        sim.send(
            c,
            &publish_packet(topic, b"x", QoSPid::AtMostOnce, false, false, &props),
        );
        assert_closed_with(&mut sim, c, V5, reason);
    }
    let p = sim.connect(V5, "p", true, 0);
    sim.publish(p, "t", b"alive", QOS0, false);
    assert_eq!(payloads(&sim.received(bystander)), ["alive"]);
}

/// 5.0 [MQTT-3.3.2-7]: topic alias mappings do not carry over to a new network connection.
fn topic_alias_not_carried_to_next_connection<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let alias = [Property::TopicAlias(1)];
    let (p, _, _) = connect_v5_persistent(&mut sim, "p", true, 3600);
    sim.publish_with(p, "t", b"set", QOS0, false, Properties::new(&alias));
    sim.disconnect(p, ReasonCode::Success);
    let (p, present, _) = connect_v5_persistent(&mut sim, "p", false, 3600);
    assert!(present);
    sim.publish_with(p, "", b"use", QOS0, false, Properties::new(&alias));
    assert_closed_with(&mut sim, p, V5, ReasonCode::ProtocolError);
}

/// 3.1.1 [MQTT-3.3.2-2] / 5.0 [MQTT-3.3.2-2]: a Topic Name with wildcards is not allowed;
/// the connection is closed (5.0: DISCONNECT 0x90 Topic Name invalid) and nothing is
/// delivered; other clients are served.
fn wildcard_topic_name_closes<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let sub = sim.connect(version, "sub", true, 0);
        sim.subscribe(sub, "#", QOS0);
        for topic in ["a/+", "a/#", "#"] {
            let c = sim.connect(version, "bad", true, 0);
            // PUBLISH QoS 0: header, remaining length, topic, payload "x".
            let mut bytes = vec![0x30, 0];
            bytes.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            bytes.extend_from_slice(topic.as_bytes());
            if version.is_v5() {
                bytes.push(0);
            }
            bytes.push(b'x');
            bytes[1] = (bytes.len() - 2) as u8;
            sim.send_bytes(c, &bytes);
            assert_closed_with(&mut sim, c, version, ReasonCode::TopicNameInvalid);
        }
        assert_eq!(sim.received(sub), []);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "a/b", b"ok", QOS0, false);
        assert_eq!(payloads(&sim.received(sub)), ["ok"]);
    }
}

/// [MQTT-4.7.2-1]: filters starting with a wildcard do not match topics starting with `$`;
/// `$SYS/#` does.
fn dollar_topics_not_matched_by_wildcards<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let all = sim.connect(version, "all", true, 0);
        sim.subscribe(all, "#", QOS0);
        let plus = sim.connect(version, "plus", true, 0);
        sim.subscribe(plus, "+/uptime", QOS0);
        sim.subscribe(plus, "+/x", QOS0);
        let sys = sim.connect(version, "sys", true, 0);
        sim.subscribe(sys, "$SYS/#", QOS0);
        sim.subscribe(sys, "$app/+", QOS0);
        sim.broker
            .publish("$SYS/uptime", b"42", QOS0, false, sim.now())
            .unwrap();
        sim.pump();
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "$app/x", b"app", QOS0, false);
        sim.publish(p, "plain/x", b"plain", QOS0, false);
        assert_eq!(payloads(&sim.received(all)), ["plain"]);
        assert_eq!(payloads(&sim.received(plus)), ["plain"]);
        assert_eq!(payloads(&sim.received(sys)), ["42", "app"]);
    }
}

/// 5.0 §4.8.2 (and 3.1.1 brokers that offer `$share`): each message matching a shared
/// subscription goes to exactly one member of the group, here in turn; ordinary
/// subscribers of the same topic still get every message; retained messages are not sent
/// on a shared subscription (5.0 §4.8.2).
fn shared_subscription_round_robin<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let p = sim.connect(V5, "p", true, 0);
    sim.publish(p, "jobs/old", b"retained", QOS0, true);
    let members: Vec<_> = (0..3)
        .map(|i| {
            let version = if i == 1 { V3 } else { V5 };
            let c = sim.connect(version, &format!("m{i}"), true, 0);
            assert_eq!(
                sim.subscribe(c, "$share/workers/jobs/#", QOS1),
                ReasonCode::GrantedQoS1
            );
            c
        })
        .collect();
    let plain = sim.connect(V5, "plain", true, 0);
    sim.subscribe(plain, "jobs/#", QOS0);
    sim.received(plain);
    for m in &members {
        assert_eq!(
            sim.received(*m),
            [],
            "no retained message to a shared subscription"
        );
    }
    for i in 0..6 {
        sim.publish(p, "jobs/new", format!("j{i}").as_bytes(), QOS1, false);
    }
    assert_eq!(payloads(&sim.received(plain)).len(), 6);
    let mut all = Vec::new();
    for m in &members {
        let got = drain_acking(&mut sim, *m);
        assert_eq!(got.len(), 2, "round robin: {got:?}");
        all.extend(got);
    }
    all.sort();
    assert_eq!(all, ["j0", "j1", "j2", "j3", "j4", "j5"]);
}

/// 5.0 §3.4.2.1 / §3.5.2.1: a PUBLISH the server does not authorize is answered with 0x87
/// Not authorized and not delivered; 3.1.1 cannot refuse a PUBLISH, so it is acknowledged
/// and dropped (§4.3 flows continue).
fn unauthorized_publish<S: BrokerStorage>() {
    let mut sim = sim_with_hooks::<S, _>(Config::default(), Guard);
    let sub = sim.connect(V5, "sub", true, 0);
    assert_eq!(sim.subscribe(sub, "#", QOS2), ReasonCode::GrantedQoS2);
    let p5 = sim.connect(V5, "p5", true, 0);
    let id = sim.publish(p5, "private/x", b"no", QOS1, false).unwrap();
    assert_eq!(
        sim.received(p5),
        [Received::PubAck(id, ReasonCode::NotAuthorized)]
    );
    let id = sim.publish(p5, "private/x", b"no", QOS2, false).unwrap();
    assert_eq!(
        sim.received(p5),
        [Received::PubRec(id, ReasonCode::NotAuthorized)]
    );
    sim.publish(p5, "private/x", b"no", QOS0, false);
    assert!(sim.is_connected(p5));
    let p3 = sim.connect(V3, "p3", true, 0);
    let id = sim.publish(p3, "private/x", b"no", QOS1, false).unwrap();
    assert_eq!(
        sim.received(p3),
        [Received::PubAck(id, ReasonCode::Success)]
    );
    assert_eq!(sim.received(sub), []);
    assert_eq!(sim.broker.retained_count(), 0);
    sim.publish(p5, "public/x", b"yes", QOS0, false);
    assert_eq!(payloads(&sim.received(sub)), ["yes"]);
}

/// 3.1.1 §4.6 / 5.0 §4.6 ([MQTT-4.6.0-5]..[MQTT-4.6.0-6]): one publisher's messages on a
/// topic reach a subscriber in the order they were published, whatever their QoS.
fn publish_order_kept<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let sub = sim.connect(version, "sub", true, 0);
        sim.subscribe(sub, "t", QOS2);
        let p = sim.connect(version, "p", true, 0);
        let mut expect = Vec::new();
        for i in 0..30 {
            let qos = [QOS0, QOS1, QOS2][i % 3];
            sim.publish(p, "t", format!("{i}").as_bytes(), qos, false);
            expect.push(format!("{i}"));
            for r in sim.received(p) {
                sim.acknowledge(p, &r);
            }
        }
        assert_eq!(drain_acking(&mut sim, sub), expect);
    }
}

/// 5.0 [MQTT-3.2.2-14]: with Retain Available 0, a PUBLISH with RETAIN 1 is answered with
/// DISCONNECT 0x9A Retain not supported; nothing is retained.
fn retain_unavailable<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        retain_available: false,
        ..Config::default()
    });
    let p = sim.connect(V5, "p", true, 0);
    sim.publish(p, "t", b"keep", QOS0, true);
    assert_closed_with(&mut sim, p, V5, ReasonCode::RetainNotSupported);
    assert_eq!(sim.broker.retained_count(), 0);
}
