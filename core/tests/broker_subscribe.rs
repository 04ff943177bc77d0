//! SUBSCRIBE / SUBACK and UNSUBSCRIBE / UNSUBACK (MQTT 3.1.1 §3.8–3.11, MQTT 5.0
//! §3.8–3.11): granted QoS, several filters in one packet, replacing a subscription,
//! authorization, the broker's maximum QoS and the order of SUBACK and retained messages.
//! Every test runs on both storage back-ends.
#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config};
use fulmar_core::codec::{
    List, Packet, Properties, ReasonCode, Subscribe, Subscription, SubscriptionOptions,
};
use fulmar_core::sim::{ClientHandle, Received, Sim};

storage_tests!(
    suback_grants_requested_qos,
    several_filters_answered_in_order,
    resubscribe_replaces_subscription,
    unsubscribe_stops_delivery,
    unauthorized_subscribe_refused_connection_stays,
    max_qos_downgrades_grants_and_refuses_higher_publish,
    no_local_on_shared_subscription_is_protocol_error,
    suback_before_retained_messages,
);

/// Sends one SUBSCRIBE with every `(filter, qos)` and returns what the client received.
fn subscribe_many<S: BrokerStorage, H: fulmar_core::broker::Hooks>(
    sim: &mut Sim<S, H>,
    client: ClientHandle,
    filters: &[(&str, fulmar_core::codec::QoS)],
) -> Vec<Received> {
    let packet_id = sim.packet_id(client);
    let subs: Vec<Subscription<'_>> = filters
        .iter()
        .map(|(f, q)| Subscription::new(f, SubscriptionOptions::qos(*q)))
        .collect();
    sim.send(
        client,
        &Packet::Subscribe(Subscribe {
            packet_id,
            properties: Properties::empty(),
            subscriptions: List::new(&subs),
        }),
    );
    sim.received(client)
}

/// 3.1.1 [MQTT-3.8.4-1] / 5.0 [MQTT-3.8.4-1]: SUBSCRIBE is answered by SUBACK with the same
/// Packet Identifier ([MQTT-3.8.4-2]); the granted QoS is the one asked for when the broker
/// supports it (§3.9.3).
fn suback_grants_requested_qos<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "c", true, 0);
        assert_eq!(sim.subscribe(c, "a", QOS0), ReasonCode::Success);
        assert_eq!(sim.subscribe(c, "b", QOS1), ReasonCode::GrantedQoS1);
        assert_eq!(sim.subscribe(c, "c/+/#", QOS2), ReasonCode::GrantedQoS2);
        assert_eq!(sim.broker.subscription_count(), 3);
        assert_eq!(sim.received(c), []);
    }
}

/// 3.1.1 [MQTT-3.8.4-4] / 5.0 [MQTT-3.8.4-5]: several filters are handled as a sequence of
/// SUBSCRIBEs answered by one SUBACK; [MQTT-3.9.3-1]: one code per filter, in order. A
/// refused filter (0x8F / 3.1.1 0x80) does not affect the others nor the connection.
fn several_filters_answered_in_order<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "c", true, 0);
        let got = subscribe_many(&mut sim, c, &[("x", QOS2), ("bad/#/x", QOS1), ("y", QOS0)]);
        let invalid = if version.is_v5() {
            ReasonCode::TopicFilterInvalid
        } else {
            ReasonCode::UnspecifiedError
        };
        assert!(
            matches!(&got[..], [Received::SubAck(_, codes)] if codes == &[ReasonCode::GrantedQoS2, invalid, ReasonCode::Success]),
            "{version}: {got:?}"
        );
        assert!(sim.is_connected(c));
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "y", b"y", QOS0, false);
        assert_eq!(payloads(&sim.received(c)), ["y"]);
    }
}

/// 3.1.1 [MQTT-3.8.4-3] / 5.0 [MQTT-3.8.4-3]: a SUBSCRIBE with a filter identical to an
/// existing subscription replaces it (new QoS), it does not add a second one.
fn resubscribe_replaces_subscription<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "c", true, 0);
        sim.subscribe(c, "t", QOS0);
        assert_eq!(sim.subscribe(c, "t", QOS2), ReasonCode::GrantedQoS2);
        assert_eq!(sim.broker.subscription_count(), 1);
        assert_eq!(sim.broker.session("c").unwrap().subscription_count(), 1);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "t", b"once", QOS2, false);
        let got = messages(&sim.received(c));
        assert_eq!(got.len(), 1, "{version}: {got:?}");
        assert_eq!(got[0].qos, QOS2);
        // And back down.
        sim.subscribe(c, "t", QOS0);
        sim.publish(p, "t", b"low", QOS2, false);
        assert_eq!(messages(&sim.received(c))[0].qos, QOS0);
    }
}

/// 3.1.1 [MQTT-3.10.4-1], [MQTT-3.10.4-2] / 5.0 [MQTT-3.10.4-1], [MQTT-3.10.4-2]: the
/// subscription is deleted and no new messages are sent for it; [MQTT-3.10.4-5] (both):
/// UNSUBACK answers even when nothing matched, in 5.0 with 0x11 No subscription existed
/// (§3.11.3).
fn unsubscribe_stops_delivery<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let c = sim.connect(version, "c", true, 0);
        sim.subscribe(c, "t", QOS1);
        let first = sim.unsubscribe(c, "t");
        let second = sim.unsubscribe(c, "t");
        let invalid = sim.unsubscribe(c, "a/#/b");
        if version.is_v5() {
            assert_eq!(first, [ReasonCode::Success]);
            assert_eq!(second, [ReasonCode::NoSubscriptionExisted]);
            assert_eq!(invalid, [ReasonCode::TopicFilterInvalid]);
        } else {
            // 3.1.1 UNSUBACK has no payload.
            assert_eq!(first, []);
            assert_eq!(second, []);
        }
        assert!(sim.is_connected(c));
        assert_eq!(sim.broker.subscription_count(), 0);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "t", b"gone", QOS1, false);
        assert_eq!(sim.received(c), []);
    }
}

/// 5.0 §3.9.3: a filter the server does not authorize gets 0x87 Not authorized; 3.1.1
/// §3.9.3: 0x80 Failure. The connection stays up and nothing is delivered.
fn unauthorized_subscribe_refused_connection_stays<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim_with_hooks::<S, _>(Config::default(), Guard);
        let c = sim.connect(version, "c", true, 0);
        let code = sim.subscribe(c, "private/#", QOS1);
        let expect = if version.is_v5() {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::UnspecifiedError
        };
        assert_eq!(code, expect);
        assert!(sim.is_connected(c));
        assert_eq!(sim.subscribe(c, "public/#", QOS1), ReasonCode::GrantedQoS1);
        sim.broker
            .publish("private/x", b"secret", QOS0, false, sim.now())
            .unwrap();
        sim.broker
            .publish("public/x", b"open", QOS0, false, sim.now())
            .unwrap();
        sim.pump();
        assert_eq!(payloads(&sim.received(c)), ["open"]);
    }
}

/// `Config::max_qos` 1: a QoS 2 subscription is granted QoS 1 (§3.9.3, 5.0 [MQTT-3.2.2-9]
/// Maximum QoS) and messages go out at most at QoS 1; a 5.0 client publishing QoS 2 gets
/// DISCONNECT 0x9B QoS not supported ([MQTT-3.2.2-11]).
fn max_qos_downgrades_grants_and_refuses_higher_publish<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_qos: QOS1,
        ..Config::default()
    });
    let c = sim.connect(V5, "c", true, 0);
    assert_eq!(sim.subscribe(c, "t", QOS2), ReasonCode::GrantedQoS1);
    sim.broker
        .publish("t", b"x", QOS2, false, sim.now())
        .unwrap();
    sim.pump();
    assert_eq!(messages(&sim.received(c))[0].qos, QOS1);
    let p = sim.connect(V5, "p", true, 0);
    sim.publish(p, "t", b"too high", QOS2, false);
    assert_closed_with(&mut sim, p, V5, ReasonCode::QoSNotSupported);
}

/// 5.0 [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error → DISCONNECT
/// 0x82.
fn no_local_on_shared_subscription_is_protocol_error<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let c = sim.connect(V5, "c", true, 0);
    let options = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::qos(QOS0)
    };
    sim.subscribe_with(c, "$share/g/t", options, None);
    assert_closed_with(&mut sim, c, V5, ReasonCode::ProtocolError);
    assert_eq!(sim.broker.subscription_count(), 0);
}

/// 3.1.1 §3.8.4 / 5.0 §3.8.4: SUBACK answers the SUBSCRIBE before the retained messages the
/// new subscription brings, which come with RETAIN=1.
fn suback_before_retained_messages<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "r/a", b"a", QOS1, true);
        sim.publish(p, "r/b", b"b", QOS0, true);
        let c = sim.connect(version, "c", true, 0);
        let got = subscribe_many(&mut sim, c, &[("r/#", QOS1)]);
        assert!(matches!(&got[0], Received::SubAck(..)), "{got:?}");
        let mut retained = messages(&got[1..]);
        retained.sort_by(|a, b| a.topic.cmp(&b.topic));
        assert_eq!(retained.len(), 2, "{got:?}");
        assert!(retained.iter().all(|m| m.retain));
        assert_eq!((retained[0].qos, retained[1].qos), (QOS1, QOS0));
    }
}
