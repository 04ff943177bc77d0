//! Bridges: store and forward through a broker-side session the host drains, with loop
//! prevention and persistence.
#![cfg(feature = "alloc")]

use std::collections::BTreeMap;

use fulmar_core::broker::{BridgeId, Broker, Config, Growable, PersistOp};
use fulmar_core::codec::{
    List, PacketId, Properties, Property, ProtocolVersion, Publish, QoS, QoSPid, ReasonCode,
};
use fulmar_core::sim::{ClientHandle, Received, Sim};
use fulmar_core::time::Instant;

/// A bridge forwarding `sensors/#` at most at `qos`, and a connected `version` device.
fn sensors_bridge(qos: QoS, version: ProtocolVersion) -> (Sim<Growable>, BridgeId, ClientHandle) {
    let mut sim = Sim::<Growable>::new(Config::default());
    let bridge = sim.broker.bridge_open("uplink", Instant::ZERO).unwrap();
    sim.broker
        .bridge_subscribe(bridge, "sensors/#", qos)
        .unwrap();
    let device = sim.connect(version, "device", true, 0);
    (sim, bridge, device)
}

/// The next message the bridge hands out: its token and payload.
fn next_message(broker: &mut Broker<Growable>, bridge: BridgeId, now: Instant) -> (u64, Vec<u8>) {
    broker
        .bridge_next(bridge, now)
        .map(|m| (m.token, m.payload.to_vec()))
        .expect("a message for the bridge")
}

#[test]
fn forwards_in_order_acknowledges_and_rewinds() {
    let (mut sim, bridge, device) = sensors_bridge(QoS::AtLeastOnce, ProtocolVersion::V3_1_1);
    let now = Instant::ZERO;
    for i in 0..3u8 {
        sim.publish(device, "sensors/t", &[i], QoS::AtLeastOnce, false);
    }
    sim.publish(device, "other", b"x", QoS::AtLeastOnce, false);
    // QoS 0 is forwarded too: the bridge is never "offline".
    sim.publish(device, "sensors/q0", b"z", QoS::AtMostOnce, false);
    assert_eq!(sim.broker.bridge_backlog(bridge), 4);

    let first = next_message(&mut sim.broker, bridge, now);
    assert_eq!(first.1, [0]);
    let second = next_message(&mut sim.broker, bridge, now);
    assert_eq!(second.1, [1]);
    assert!(sim.broker.bridge_ack(bridge, first.0));
    // The uplink dropped before `second` was acknowledged: it goes out again, first.
    sim.broker.bridge_rewind(bridge);
    let again = next_message(&mut sim.broker, bridge, now).1;
    assert_eq!(again, [1]);
    let rest: Vec<Vec<u8>> = std::iter::from_fn(|| {
        sim.broker
            .bridge_next(bridge, now)
            .map(|m| m.payload.to_vec())
    })
    .collect();
    assert_eq!(rest, [vec![2], b"z".to_vec()]);
}

#[test]
fn messages_from_upstream_reach_local_subscribers_but_never_go_back_up() {
    let mut sim = Sim::<Growable>::new(Config::default());
    let now = Instant::ZERO;
    let bridge = sim.broker.bridge_open("cloud", now).unwrap();
    sim.broker
        .bridge_subscribe(bridge, "#", QoS::AtLeastOnce)
        .unwrap();
    let local = sim.connect(ProtocolVersion::V5, "local", true, 0);
    sim.subscribe(local, "cmd/#", QoS::AtLeastOnce);
    let publish = Publish {
        dup: false,
        qos_pid: QoSPid::AtLeastOnce(PacketId::MIN),
        retain: false,
        topic: "cmd/valve",
        properties: Properties::empty(),
        payload: b"open",
    };
    assert_eq!(sim.broker.bridge_publish(bridge, &publish, now), Ok(1));
    sim.pump();
    let got = sim.received(local);
    assert!(
        matches!(&got[..], [Received::Publish { topic, .. }] if topic == "cmd/valve"),
        "{got:?}"
    );
    // No Local on the bridge's subscription: nothing queued to send back upstream.
    assert_eq!(sim.broker.bridge_backlog(bridge), 0);
}

#[test]
fn a_message_from_a_5_0_upstream_keeps_its_properties_and_expiry() {
    let mut sim = Sim::<Growable>::new(Config::default());
    let now = Instant::ZERO;
    let bridge = sim.broker.bridge_open("cloud", now).unwrap();
    let local = sim.connect(ProtocolVersion::V5, "local", true, 0);
    sim.subscribe(local, "cmd/#", QoS::AtLeastOnce);
    // As upstream sent it: a user property, an expiry, and a Topic Alias of that hop.
    let items = [
        Property::UserProperty("site", "north"),
        Property::MessageExpiryInterval(60),
        Property::TopicAlias(3),
    ];
    let publish = Publish {
        dup: false,
        qos_pid: QoSPid::AtLeastOnce(PacketId::MIN),
        retain: false,
        topic: "cmd/valve",
        properties: List::new(&items),
        payload: b"open",
    };
    assert_eq!(sim.broker.bridge_publish(bridge, &publish, now), Ok(1));
    sim.pump();
    match &sim.received(local)[..] {
        [
            Received::Publish {
                user_properties,
                message_expiry,
                topic_alias,
                ..
            },
        ] => {
            assert_eq!(user_properties, &[("site".to_owned(), "north".to_owned())]);
            // [MQTT-3.3.2-6]: the expiry left when it is sent.
            assert_eq!(*message_expiry, Some(60));
            assert_eq!(*topic_alias, None, "upstream's alias is not passed on");
        }
        other => panic!("{other:?}"),
    }
}

/// [MQTT-3.1.2-24]: a message too large for upstream is forgotten and counted as
/// oversized, never rewound to go again.
#[test]
fn a_message_too_large_for_upstream_is_forgotten_and_counted() {
    let (mut sim, bridge, device) = sensors_bridge(QoS::AtLeastOnce, ProtocolVersion::V3_1_1);
    let now = Instant::ZERO;
    sim.publish(device, "sensors/big", &[7; 600], QoS::AtLeastOnce, false);
    sim.publish(device, "sensors/small", b"s", QoS::AtLeastOnce, false);
    let big = sim
        .broker
        .bridge_next(bridge, now)
        .map(|m| m.token)
        .unwrap();
    assert!(sim.broker.bridge_oversized(bridge, big));
    assert_eq!(sim.broker.stats().messages_oversized, 1);
    // Shown to the user with the bridge's other drops.
    assert_eq!(sim.broker.bridge_dropped(bridge), 1);
    sim.broker.bridge_rewind(bridge);
    let next = next_message(&mut sim.broker, bridge, now).1;
    assert_eq!(next, b"s");
}

#[test]
fn network_clients_cannot_take_a_bridge_session() {
    let mut sim = Sim::<Growable>::new(Config::default());
    sim.broker.bridge_open("uplink", Instant::ZERO).unwrap();
    let c = sim.connect_with(&fulmar_core::sim::connect_packet(
        ProtocolVersion::V5,
        "uplink",
        false,
        0,
    ));
    let got = sim.received(c);
    assert!(
        matches!(
            &got[..],
            [Received::ConnAck {
                code: ReasonCode::ClientIdentifierNotValid,
                ..
            }]
        ),
        "{got:?}"
    );
}

/// A new broker restored from everything `sim`'s broker reported for persistence.
fn restarted(sim: &mut Sim<Growable>, config: Config) -> Broker<Growable> {
    let mut store = BTreeMap::new();
    let mut buf = vec![0u8; 4096];
    while let Some(op) = sim.broker.poll_persist(&mut buf).unwrap() {
        match op {
            PersistOp::Put { key, value } => {
                store.insert(key.to_vec(), value.to_vec());
            }
            PersistOp::Delete { key } => {
                store.remove(key);
            }
            PersistOp::DeleteSession { prefix } => {
                store.retain(|k: &Vec<u8>, _| !k.starts_with(prefix))
            }
            PersistOp::Reset => store.clear(),
        }
    }
    let mut rebuilt = Broker::<Growable>::new(config, 9);
    for (k, v) in &store {
        rebuilt.restore(k, v, sim.now()).unwrap();
    }
    rebuilt
}

/// A persisting broker with a bridge forwarding `data/#` at most at `qos`, to which a
/// `version` device has published "one" (at `qos`) and "two" (QoS 2).
fn persistent_bridge(qos: QoS, version: ProtocolVersion) -> (Sim<Growable>, BridgeId, Config) {
    let config = Config {
        persistence: true,
        ..Config::default()
    };
    let mut sim = Sim::<Growable>::new(config.clone());
    let bridge = sim.broker.bridge_open("uplink", Instant::ZERO).unwrap();
    sim.broker.bridge_subscribe(bridge, "data/#", qos).unwrap();
    let device = sim.connect(version, "device", true, 0);
    sim.publish(device, "data/1", b"one", qos, false);
    sim.publish(device, "data/2", b"two", QoS::ExactlyOnce, false);
    (sim, bridge, config)
}

#[test]
fn the_backlog_survives_a_restart_through_persistence() {
    let (mut sim, bridge, config) = persistent_bridge(QoS::AtLeastOnce, ProtocolVersion::V3_1_1);
    let now = Instant::ZERO;
    // One handed out but not acknowledged when the power goes.
    let sent_id = sim
        .broker
        .bridge_next(bridge, now)
        .and_then(|m| m.packet_id);
    assert!(sent_id.is_some());
    let mut rebuilt = restarted(&mut sim, config);
    let bridge = rebuilt.bridge_open("uplink", now).unwrap();
    rebuilt.bridge_rewind(bridge);
    let forwarded: Vec<(Vec<u8>, bool)> = std::iter::from_fn(|| {
        let m = rebuilt.bridge_next(bridge, now)?;
        // The one sent before the restart goes again with its identifier [MQTT-4.4.0-1].
        if m.payload == b"one" {
            assert_eq!(m.packet_id, sent_id);
        }
        Some((m.payload.to_vec(), m.dup))
    })
    .collect();
    assert_eq!(
        forwarded,
        [(b"one".to_vec(), true), (b"two".to_vec(), false)],
        "in order, the one sent before with DUP"
    );
}

/// A bridge forwarding `sensors/#` whose queue holds 4 messages, and a 3.1.1 device that
/// has published 10 numbered QoS 1 readings to it; `online`: the uplink is up meanwhile.
fn flooded_bridge(online: bool) -> (Sim<Growable>, BridgeId, ClientHandle) {
    let mut sim = Sim::<Growable>::new(Config {
        max_queued_messages: 4,
        ..Config::default()
    });
    let bridge = sim.broker.bridge_open("uplink", sim.now()).unwrap();
    sim.broker
        .bridge_subscribe(bridge, "sensors/#", QoS::AtLeastOnce)
        .unwrap();
    sim.broker.bridge_online(bridge, online);
    let device = sim.connect(ProtocolVersion::V3_1_1, "device", true, 0);
    sim.received(device);
    for i in 0..10u8 {
        sim.publish(device, "sensors/t", &[i], QoS::AtLeastOnce, false);
    }
    (sim, bridge, device)
}

fn pubacks(sim: &mut Sim<Growable>, client: ClientHandle) -> usize {
    sim.received(client)
        .iter()
        .filter(|r| matches!(r, Received::PubAck(..)))
        .count()
}

/// Forwards everything queued, one message at a time, acknowledging each as upstream
/// would; returns the payloads in forwarding order.
fn forward_all(sim: &mut Sim<Growable>, bridge: BridgeId) -> Vec<u8> {
    let mut forwarded = Vec::new();
    loop {
        let now = sim.now();
        let Some((token, payload)) = sim
            .broker
            .bridge_next(bridge, now)
            .map(|m| (m.token, m.payload[0]))
        else {
            return forwarded;
        };
        assert!(sim.broker.bridge_ack(bridge, token));
        forwarded.push(payload);
        // A publisher held back by the full queue goes on.
        sim.pump();
    }
}

#[test]
fn with_the_uplink_up_a_full_bridge_queue_holds_publishers_back_and_loses_nothing() {
    // The default policy drops on a full queue; a bridge whose uplink is up does not.
    let (mut sim, bridge, device) = flooded_bridge(true);
    assert_eq!(pubacks(&mut sim, device), 4);
    assert!(
        sim.is_stalled(device),
        "the fifth reading waits for the uplink"
    );
    assert_eq!(forward_all(&mut sim, bridge), (0..10).collect::<Vec<u8>>());
    assert_eq!(pubacks(&mut sim, device), 6);
    assert!(!sim.is_stalled(device));
    assert_eq!(sim.broker.stats().messages_dropped, 0);
    assert_eq!(sim.broker.bridge_dropped(bridge), 0);
}

#[test]
fn with_the_uplink_down_the_backlog_is_bounded_and_drops_the_newest() {
    let (mut sim, bridge, device) = flooded_bridge(false);
    // Never held back: every reading acknowledged, the six beyond the bound dropped.
    assert!(!sim.is_stalled(device));
    assert_eq!(pubacks(&mut sim, device), 10);
    assert_eq!(sim.broker.stats().messages_dropped, 6);
    assert_eq!(sim.broker.bridge_dropped(bridge), 6);
    sim.broker.bridge_online(bridge, true);
    assert_eq!(forward_all(&mut sim, bridge), [0, 1, 2, 3]);
}

#[test]
fn drops_are_counted_for_the_bridge_whose_backlog_was_full() {
    let (mut sim, sensors, device) = flooded_bridge(false);
    let other = sim.broker.bridge_open("other-uplink", sim.now()).unwrap();
    sim.broker
        .bridge_subscribe(other, "other/#", QoS::AtLeastOnce)
        .unwrap();
    sim.publish(device, "other/x", b"x", QoS::AtLeastOnce, false);
    // A local client's full queue is not a bridge's drop.
    let offline = sim.connect(ProtocolVersion::V3_1_1, "offline", false, 0);
    sim.subscribe(offline, "other/#", QoS::AtLeastOnce);
    sim.disconnect(offline, ReasonCode::Success);
    for _ in 0..5 {
        sim.publish(device, "other/x", b"x", QoS::AtLeastOnce, false);
    }
    assert_eq!(sim.broker.bridge_dropped(sensors), 6);
    // Its backlog took the six (bound 4): two dropped.
    assert_eq!(sim.broker.bridge_dropped(other), 2);
    assert_eq!(sim.broker.stats().messages_dropped, 6 + 2 + 1);
}

#[test]
fn losing_the_uplink_releases_held_publishers() {
    let (mut sim, bridge, device) = flooded_bridge(true);
    assert!(sim.is_stalled(device));
    sim.broker.bridge_online(bridge, false);
    sim.pump();
    // The held readings find the backlog full: dropped, acknowledged, counted.
    assert!(!sim.is_stalled(device));
    assert_eq!(pubacks(&mut sim, device), 10);
    assert_eq!(sim.broker.stats().messages_dropped, 6);
    assert_eq!(forward_all(&mut sim, bridge), [0, 1, 2, 3]);
}

#[test]
fn rewound_messages_keep_their_packet_identifier_and_go_again_with_dup() {
    let (mut sim, bridge, _device) = flooded_bridge(true);
    let now = sim.now();
    let mut sent = Vec::new();
    for _ in 0..3 {
        let m = sim.broker.bridge_next(bridge, now).unwrap();
        assert!(!m.dup, "a first hand-out is not a re-delivery");
        sent.push((m.payload[0], m.packet_id.expect("QoS 1 has an identifier")));
    }
    let ids: Vec<_> = sent.iter().map(|(_, id)| *id).collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    // Another packet upstream (a SUBSCRIBE) gets an identifier none of them holds.
    let other = sim.broker.bridge_packet_id(bridge).unwrap();
    assert!(!ids.contains(&other));

    sim.broker.bridge_rewind(bridge);
    for (payload, id) in sent {
        let m = sim.broker.bridge_next(bridge, now).unwrap();
        assert_eq!(
            (m.payload[0], m.packet_id, m.dup),
            (payload, Some(id), true)
        );
    }
    let fresh = sim.broker.bridge_next(bridge, now).unwrap();
    assert_eq!((fresh.payload[0], fresh.dup), (3, false));
}

#[test]
fn a_qos_2_message_is_released_at_pubrec_and_only_its_pubrel_goes_again() {
    let (mut sim, bridge, device) = sensors_bridge(QoS::ExactlyOnce, ProtocolVersion::V5);
    let now = Instant::ZERO;
    sim.publish(device, "sensors/t", b"one", QoS::ExactlyOnce, false);
    let (token, id, qos) = sim
        .broker
        .bridge_next(bridge, now)
        .map(|m| (m.token, m.packet_id.unwrap(), m.qos))
        .unwrap();
    assert_eq!(qos, QoS::ExactlyOnce);
    // PUBREC: upstream owns the message now.
    assert!(sim.broker.bridge_received(bridge, token));
    assert!(!sim.broker.bridge_received(bridge, token), "once");
    // The link drops before PUBCOMP: the message is not sent again, its PUBREL is.
    sim.broker.bridge_rewind(bridge);
    assert!(sim.broker.bridge_next(bridge, now).is_none());
    assert_eq!(
        sim.broker.bridge_pending_release::<4>(bridge).as_slice(),
        [(token, id)]
    );
    // Its identifier stays taken until PUBCOMP [MQTT-2.2.1-3].
    sim.publish(device, "sensors/t", b"two", QoS::ExactlyOnce, false);
    let second = sim.broker.bridge_next(bridge, now).unwrap();
    assert_eq!(second.payload, b"two");
    assert_ne!(second.packet_id, Some(id));
    // PUBCOMP.
    assert!(sim.broker.bridge_ack(bridge, token));
    assert!(sim.broker.bridge_pending_release::<4>(bridge).is_empty());
    assert_eq!(sim.broker.bridge_backlog(bridge), 1);
}

#[test]
fn a_qos_2_message_upstream_received_is_released_again_after_a_restart() {
    let (mut sim, bridge, config) = persistent_bridge(QoS::ExactlyOnce, ProtocolVersion::V5);
    let now = Instant::ZERO;
    let (token, id) = sim
        .broker
        .bridge_next(bridge, now)
        .map(|m| (m.token, m.packet_id.unwrap()))
        .unwrap();
    // PUBREC came; the power goes before PUBCOMP.
    assert!(sim.broker.bridge_received(bridge, token));
    let mut rebuilt = restarted(&mut sim, config);
    let bridge = rebuilt.bridge_open("uplink", now).unwrap();
    rebuilt.bridge_rewind(bridge);
    // Its PUBREL goes again with its identifier [MQTT-4.4.0-1]; the message does not.
    let pending = rebuilt.bridge_pending_release::<4>(bridge);
    assert_eq!(pending.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [id]);
    let next = rebuilt.bridge_next(bridge, now).map(|m| m.payload.to_vec());
    assert_eq!(next.as_deref(), Some(&b"two"[..]));
    assert!(rebuilt.bridge_next(bridge, now).is_none());
    assert!(rebuilt.bridge_ack(bridge, pending[0].0));
}
