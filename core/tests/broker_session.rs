//! Sessions (MQTT 3.1.1 §4.1 and §4.4, MQTT 5.0 §4.1 and §4.4): persistent sessions across
//! connections, the offline queue and its bound, re-delivery of in-flight messages with
//! DUP and PUBREL, inbound QoS 2 state, session expiry in virtual time and Clean Start.
//! Every test runs on both storage back-ends.
#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config, OverflowPolicy};
use fulmar_core::codec::{
    Ack, Disconnect, Packet, PacketId, Properties, Property, QoSPid, ReasonCode,
};
use fulmar_core::sim::{Received, connect_packet};

storage_tests!(
    persistent_session_queues_offline_and_redelivers_in_order,
    inflight_resent_with_dup_and_pubrel_after_reconnect,
    inbound_qos2_state_survives_reconnect,
    session_expires_in_virtual_time,
    disconnect_can_shorten_session_expiry,
    disconnect_cannot_revive_zero_expiry,
    v3_persistent_session_capped_by_max_session_expiry,
    clean_start_discards_queued_messages,
    offline_queue_drop_new,
    offline_queue_drop_oldest,
    qos0_not_queued_offline_by_default,
    qos0_queued_offline_when_configured,
    resumed_session_keeps_packet_ids_unique,
    offline_queue_byte_bound,
);

/// 3.1.1 §4.1, [MQTT-3.1.2-4], [MQTT-3.1.2-5] / 5.0 §4.1, [MQTT-3.1.2-5]: a persistent
/// session keeps its subscriptions and the QoS 1 and 2 messages that arrive while the client
/// is away (QoS 0 optionally, off here), and sends them in order when it resumes
/// (§4.6 ordering), after CONNACK with Session Present 1.
fn persistent_session_queues_offline_and_redelivers_in_order<S: BrokerStorage>() {
    for version in [V3, V5] {
        for abrupt in [false, true] {
            let mut sim = sim::<S>(Config::default());
            let (sub, _, _) = connect_persistent(&mut sim, version, "sub", false);
            sim.subscribe(sub, "t/#", QOS2);
            if abrupt {
                sim.drop_connection(sub);
            } else {
                sim.disconnect(sub, ReasonCode::Success);
            }
            let p = sim.connect(version, "p", true, 0);
            sim.publish(p, "t/1", b"a", QOS1, false);
            sim.publish(p, "t/2", b"b", QOS2, false);
            sim.publish(p, "t/3", b"c", QOS0, false);
            sim.publish(p, "t/1", b"d", QOS1, false);
            let (sub, present, got) = connect_persistent(&mut sim, version, "sub", true);
            assert!(present, "{version}");
            assert_eq!(payloads(&got), ["a", "b", "d"], "{version} abrupt={abrupt}");
            let qos: Vec<_> = messages(&got).iter().map(|m| (m.qos, m.dup)).collect();
            assert_eq!(qos, [(QOS1, false), (QOS2, false), (QOS1, false)]);
            for r in &got {
                sim.acknowledge(sub, r);
            }
            drain_acking(&mut sim, sub);
            assert_eq!(sim.broker.session("sub").unwrap().queue_len(), 0);
            // The subscription is still there.
            sim.publish(p, "t/9", b"live", QOS0, false);
            assert_eq!(payloads(&sim.received(sub)), ["live"]);
        }
    }
}

/// 3.1.1 [MQTT-4.4.0-1] / 5.0 [MQTT-4.4.0-1]: on resuming a session the server re-sends
/// unacknowledged PUBLISH packets (with their original Packet Identifiers, DUP=1 per
/// 3.1.1 [MQTT-3.3.1-1] / 5.0 [MQTT-3.3.1-1]) and PUBREL packets, in the original order
/// (5.0 [MQTT-4.6.0-1]..[MQTT-4.6.0-4]).
fn inflight_resent_with_dup_and_pubrel_after_reconnect<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let (sub, _, _) = connect_persistent(&mut sim, version, "sub", false);
        sim.subscribe(sub, "t", QOS2);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "t", b"one", QOS1, false);
        sim.publish(p, "t", b"two", QOS2, false);
        sim.publish(p, "t", b"three", QOS2, false);
        let first = sim.received(sub);
        assert_eq!(payloads(&first), ["one", "two", "three"]);
        let ids: Vec<PacketId> = first.iter().map(pid_of).collect();
        // Only "three" gets as far as PUBREC → PUBREL.
        sim.acknowledge(sub, &first[2]);
        assert_eq!(
            sim.received(sub),
            [Received::PubRel(ids[2], ReasonCode::Success)]
        );
        sim.drop_connection(sub);

        let (sub, present, got) = connect_persistent(&mut sim, version, "sub", true);
        assert!(present);
        let expect_publish = |r: &Received, payload: &[u8], id: PacketId| matches!(r, Received::Publish { payload: p, packet_id: Some(i), dup: true, .. } if p == payload && *i == id);
        assert_eq!(got.len(), 3, "{version}: {got:?}");
        assert!(expect_publish(&got[0], b"one", ids[0]), "{got:?}");
        assert!(expect_publish(&got[1], b"two", ids[1]), "{got:?}");
        assert_eq!(got[2], Received::PubRel(ids[2], ReasonCode::Success));
        // Completing every flow leaves nothing to resend.
        for r in &got {
            sim.acknowledge(sub, r);
        }
        drain_acking(&mut sim, sub);
        assert_eq!(sim.broker.session("sub").unwrap().queue_len(), 0);
        sim.drop_connection(sub);
        let (_, _, got) = connect_persistent(&mut sim, version, "sub", true);
        assert_eq!(got, []);
    }
}

/// 3.1.1 §4.1 / 5.0 §4.1.1: the session keeps the identifiers of QoS 2 messages received
/// and not yet released; a client resending such a PUBLISH after reconnecting
/// ([MQTT-4.4.0-1], DUP=1) gets PUBREC again and the message is not delivered twice.
fn inbound_qos2_state_survives_reconnect<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let watcher = sim.connect(V5, "w", true, 0);
        sim.subscribe(watcher, "t", QOS2);
        let (p, _, _) = connect_persistent(&mut sim, version, "p", false);
        let id = PacketId::new(5).unwrap();
        sim.send(
            p,
            &publish_packet("t", b"once", QoSPid::ExactlyOnce(id), false, false, &[]),
        );
        assert_eq!(sim.received(p), [Received::PubRec(id, ReasonCode::Success)]);
        sim.drop_connection(p);
        let (p, present, _) = connect_persistent(&mut sim, version, "p", true);
        assert!(present);
        sim.send(
            p,
            &publish_packet("t", b"once", QoSPid::ExactlyOnce(id), true, false, &[]),
        );
        assert_eq!(sim.received(p), [Received::PubRec(id, ReasonCode::Success)]);
        sim.send(p, &Packet::PubRel(Ack::new(id)));
        assert_eq!(
            sim.received(p),
            [Received::PubComp(id, ReasonCode::Success)]
        );
        assert_eq!(drain_acking(&mut sim, watcher), ["once"], "{version}");
    }
}

/// 5.0 §3.1.2.11.2, [MQTT-4.1.0-2]: the server discards the session when its Session
/// Expiry Interval has passed since the connection closed; before that it is resumed.
fn session_expires_in_virtual_time<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let (c, _, _) = connect_v5_persistent(&mut sim, "s", true, 30);
    sim.subscribe(c, "t", QOS1);
    sim.disconnect(c, ReasonCode::Success);
    let p = sim.connect(V5, "p", true, 0);
    sim.publish(p, "t", b"queued", QOS1, false);
    sim.advance(secs(29));
    assert!(sim.broker.session("s").is_some());
    // Resuming within the interval finds everything, and restarts the clock.
    let (c, present, got) = connect_v5_persistent(&mut sim, "s", false, 30);
    assert!(present);
    assert_eq!(payloads(&got), ["queued"]);
    for r in &got {
        sim.acknowledge(c, r);
    }
    sim.disconnect(c, ReasonCode::Success);
    sim.publish(p, "t", b"lost", QOS1, false);
    sim.advance(secs(29));
    assert!(sim.broker.session("s").is_some());
    sim.advance(secs(1));
    assert!(sim.broker.session("s").is_none(), "expired after 30 s");
    assert_eq!(sim.broker.subscription_count(), 0);
    let (_, present, got) = connect_v5_persistent(&mut sim, "s", false, 30);
    assert!(!present);
    assert_eq!(got, []);
}

/// 5.0 §3.14.2.2.2: DISCONNECT may carry a new Session Expiry Interval; 0 ends the session
/// with the connection.
fn disconnect_can_shorten_session_expiry<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let (c, _, _) = connect_v5_persistent(&mut sim, "s", true, 3600);
    let zero = [Property::SessionExpiryInterval(0)];
    sim.send(
        c,
        &Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::new(&zero),
        }),
    );
    assert!(!sim.is_connected(c));
    assert!(sim.broker.session("s").is_none());
    // And a longer one than asked at CONNECT is honoured too.
    let (c, _, _) = connect_v5_persistent(&mut sim, "t", true, 10);
    let longer = [Property::SessionExpiryInterval(100)];
    sim.send(
        c,
        &Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::new(&longer),
        }),
    );
    sim.advance(secs(50));
    assert!(sim.broker.session("t").is_some());
    sim.advance(secs(50));
    assert!(sim.broker.session("t").is_none());
}

/// 5.0 §3.14.2.2.2: a client whose CONNECT had Session Expiry Interval 0 must not set a
/// non-zero one in DISCONNECT; the server answers DISCONNECT 0x82 and the session ends.
fn disconnect_cannot_revive_zero_expiry<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let c = sim.connect(V5, "s", true, 0);
    let revive = [Property::SessionExpiryInterval(60)];
    sim.send(
        c,
        &Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::new(&revive),
        }),
    );
    assert_closed_with(&mut sim, c, V5, ReasonCode::ProtocolError);
    assert!(sim.broker.session("s").is_none());
}

/// 3.1.1 persistent sessions never expire by the protocol; `Config::max_session_expiry`
/// bounds them (as Mosquitto's `persistent_client_expiration`), and 5.0 requests too.
fn v3_persistent_session_capped_by_max_session_expiry<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_session_expiry: 100,
        ..Config::default()
    });
    let c = sim.connect(V3, "v3", false, 0);
    sim.disconnect(c, ReasonCode::Success);
    let (c, _, _) = connect_v5_persistent(&mut sim, "v5", true, u32::MAX);
    sim.disconnect(c, ReasonCode::Success);
    sim.advance(secs(99));
    assert!(sim.broker.session("v3").is_some() && sim.broker.session("v5").is_some());
    sim.advance(secs(1));
    assert!(sim.broker.session("v3").is_none() && sim.broker.session("v5").is_none());
}

/// 3.1.1 [MQTT-3.1.2-6] / 5.0 [MQTT-3.1.2-4]: Clean Start (Clean Session) 1 discards the
/// stored session, with its subscriptions and queued messages.
fn clean_start_discards_queued_messages<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let (c, _, _) = connect_persistent(&mut sim, version, "s", false);
        sim.subscribe(c, "t", QOS1);
        sim.drop_connection(c);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "t", b"old", QOS1, false);
        let (c, present, got) = connect_get(&mut sim, &connect_packet(version, "s", true, 0));
        assert!(!present);
        assert_eq!(got, []);
        sim.publish(p, "t", b"new", QOS1, false);
        assert_eq!(sim.received(c), []);
        sim.disconnect(c, ReasonCode::Success);
        let (_, present, got) = connect_persistent(&mut sim, version, "s", true);
        assert!(!present);
        assert_eq!(got, []);
    }
}

/// Publishes `n` QoS 1 messages `m0..` to `t` for an offline persistent subscriber and
/// returns what it gets on resuming.
fn offline_overflow<S: BrokerStorage>(policy: OverflowPolicy, n: usize) -> (Vec<String>, u64) {
    let mut sim = sim::<S>(Config {
        max_queued_messages: 3,
        overflow_policy: policy,
        ..Config::default()
    });
    let (c, _, _) = connect_v5_persistent(&mut sim, "s", true, 3600);
    sim.subscribe(c, "t", QOS1);
    sim.disconnect(c, ReasonCode::Success);
    let p = sim.connect(V5, "p", true, 0);
    for i in 0..n {
        let id = sim
            .publish(p, "t", format!("m{i}").as_bytes(), QOS1, false)
            .unwrap();
        // The publisher's message was accepted whatever happens to one subscriber's copy,
        // and it had a matching subscriber: Success, not 0x10 (5.0 §3.4.2.1).
        assert_eq!(sim.received(p), [Received::PubAck(id, ReasonCode::Success)]);
    }
    let (c, _, got) = connect_v5_persistent(&mut sim, "s", false, 3600);
    let mut all = payloads(&got);
    for r in &got {
        sim.acknowledge(c, r);
    }
    all.extend(drain_acking(&mut sim, c));
    (all, sim.broker.stats().messages_dropped)
}

/// `Config::max_queued_messages` with `OverflowPolicy::DropNew`: messages beyond the bound
/// are dropped for that session, the queued ones kept in order (Invariant 4: a limit, not
/// an OOM).
fn offline_queue_drop_new<S: BrokerStorage>() {
    let (got, dropped) = offline_overflow::<S>(OverflowPolicy::DropNew, 5);
    assert_eq!(got, ["m0", "m1", "m2"]);
    assert_eq!(dropped, 2);
}

/// `OverflowPolicy::DropOldest`: the oldest waiting messages make room for new ones.
fn offline_queue_drop_oldest<S: BrokerStorage>() {
    let (got, dropped) = offline_overflow::<S>(OverflowPolicy::DropOldest, 5);
    assert_eq!(got, ["m2", "m3", "m4"]);
    assert_eq!(dropped, 2);
}

/// 3.1.1 §3.1.2.4 / 5.0 §4.1: queueing QoS 0 messages for an offline session is optional;
/// Fulmar does not by default (as Mosquitto).
fn qos0_not_queued_offline_by_default<S: BrokerStorage>() {
    for version in [V3, V5] {
        let mut sim = sim::<S>(Config::default());
        let (c, _, _) = connect_persistent(&mut sim, version, "s", false);
        sim.subscribe(c, "t", QOS2);
        sim.drop_connection(c);
        let p = sim.connect(version, "p", true, 0);
        sim.publish(p, "t", b"zero", QOS0, false);
        sim.publish(p, "t", b"one", QOS1, false);
        let (_, _, got) = connect_persistent(&mut sim, version, "s", true);
        assert_eq!(payloads(&got), ["one"]);
        // A QoS 0 subscription of an offline session still matches: a 5.0 publisher hears
        // Success, not 0x10 No matching subscribers (5.0 §3.4.2.1).
        let (low, _, _) = connect_persistent(&mut sim, version, "low", false);
        sim.subscribe(low, "q0", QOS0);
        sim.drop_connection(low);
        let p5 = sim.connect(V5, "p5", true, 0);
        let id = sim.publish(p5, "q0", b"x", QOS1, false).unwrap();
        assert_eq!(
            sim.received(p5),
            [Received::PubAck(id, ReasonCode::Success)]
        );
    }
}

/// `Config::queue_qos0_offline`: QoS 0 messages wait for an offline session too.
fn qos0_queued_offline_when_configured<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        queue_qos0_offline: true,
        ..Config::default()
    });
    let c = sim.connect(V3, "s", false, 0);
    sim.subscribe(c, "t", QOS1);
    sim.drop_connection(c);
    let p = sim.connect(V3, "p", true, 0);
    sim.publish(p, "t", b"zero", QOS0, false);
    let (_, _, got) = connect_persistent(&mut sim, V3, "s", true);
    let got = messages(&got);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].qos, got[0].payload.as_slice()),
        (QOS0, &b"zero"[..])
    );
}

/// 5.0 [MQTT-2.2.1-4] (3.1.1 §2.3.1): a new message never reuses the Packet
/// Identifier of one still in flight, also after the session resumed.
fn resumed_session_keeps_packet_ids_unique<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config::default());
    let (c, _, _) = connect_v5_persistent(&mut sim, "s", true, 3600);
    sim.subscribe(c, "t", QOS1);
    let p = sim.connect(V5, "p", true, 0);
    sim.publish(p, "t", b"a", QOS1, false);
    sim.publish(p, "t", b"b", QOS1, false);
    let first = sim.received(c);
    sim.drop_connection(c);
    sim.publish(p, "t", b"c", QOS1, false);
    let (c, _, got) = connect_v5_persistent(&mut sim, "s", false, 3600);
    assert_eq!(payloads(&got), ["a", "b", "c"]);
    let mut ids: Vec<PacketId> = got.iter().map(pid_of).collect();
    assert_eq!(&ids[..2], &[pid_of(&first[0]), pid_of(&first[1])]);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    for r in &got {
        sim.acknowledge(c, r);
    }
    assert_eq!(sim.received(c), []);
}

/// `Config::max_queued_bytes`: payload bytes waiting for one session are bounded too.
fn offline_queue_byte_bound<S: BrokerStorage>() {
    let mut sim = sim::<S>(Config {
        max_queued_bytes: 10,
        ..Config::default()
    });
    let c = sim.connect(V3, "s", false, 0);
    sim.subscribe(c, "t", QOS1);
    sim.drop_connection(c);
    let p = sim.connect(V3, "p", true, 0);
    for payload in ["aaaa", "bbbb", "cccc", "d"] {
        sim.publish(p, "t", payload.as_bytes(), QOS1, false);
    }
    let (_, _, got) = connect_persistent(&mut sim, V3, "s", true);
    assert_eq!(payloads(&got), ["aaaa", "bbbb", "d"]);
}
