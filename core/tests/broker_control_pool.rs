//! Fairness of a fixed pool of control packets (`Config::max_pending_controls`): a client
//! that publishes at QoS 1 without reading its socket has its acknowledgments pile up in
//! the pool every connection shares. With a per-connection limit its input stops being
//! consumed at its share (TCP holds it back), so other clients keep getting their
//! CONNACK, SUBACK, PUBACK and PINGRESP; without one the pool fills and the next client
//! that needs an answer is closed with 0x89 Server busy.
#![cfg(feature = "alloc")]

#[allow(unused_macros)]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config};
use fulmar_core::codec::{Packet, PacketId, ReasonCode};
use fulmar_core::sim::{Received, Sim};

fulmar_core::fixed_broker_storage! {
    /// Four connections sharing twelve pending control packets, as the firmware's ten
    /// share forty.
    struct SmallPool {
        connections: 4, sessions: 4, subscriptions: 8, topic_nodes: 16,
        share_groups: 1, text: 32, messages: 16, queue: 16, controls: 12,
        inbound: 8, aliases: 1, retained: 1, blob_bytes: 2048, slots: 64,
    }
}

/// Each connection's share of [`SmallPool`]'s controls, less one for a closing DISCONNECT.
const SHARE: usize = 12 / 4 - 1;

/// QoS 1 PUBLISHes each greedy client sends without reading: together more than the pool.
const GREEDY_PUBLISHES: u16 = 8;

fn config() -> Config {
    Config {
        max_connections: 4,
        max_clients: 4,
        max_sessions: 4,
        max_pending_controls: SHARE,
        ..Config::default()
    }
}

/// The packet identifiers of the acknowledgments of one kind ("PUBACK", "PUBREC",
/// "PUBCOMP") among `received`, in order.
fn acks(received: &[Received], kind: &str) -> Vec<PacketId> {
    received
        .iter()
        .filter_map(|r| match (kind, r) {
            ("PUBACK", Received::PubAck(id, _))
            | ("PUBREC", Received::PubRec(id, _))
            | ("PUBCOMP", Received::PubComp(id, _)) => Some(*id),
            _ => None,
        })
        .collect()
}

/// Two clients publish QoS 1 without reading; a third still connects, subscribes,
/// publishes with a round trip and pings; then the greedy ones read and find every
/// PUBACK, in order.
fn greedy_publishers_do_not_starve_others<S: BrokerStorage>(config: Config) {
    let mut sim: Sim<S> = Sim::new(config);
    let greedy = [
        sim.connect(V3, "greedy-1", true, 0),
        sim.connect(V5, "greedy-2", true, 0),
    ];
    for &g in &greedy {
        sim.stop_reading(g);
        for i in 0..GREEDY_PUBLISHES {
            sim.publish(g, "bulk", &i.to_be_bytes(), QOS1, false);
        }
        assert!(
            sim.is_connected(g),
            "a greedy publisher is held back, not closed"
        );
    }

    let other = sim.connect(V3, "other", true, 0);
    assert_eq!(sim.subscribe(other, "t", QOS1), ReasonCode::GrantedQoS1);
    let id = sim.publish(other, "t", b"round trip", QOS1, false);
    let got = sim.received(other);
    assert!(
        got.iter()
            .any(|r| matches!(r, Received::Publish { payload, .. } if payload == b"round trip")),
        "{got:?}"
    );
    assert_eq!(acks(&got, "PUBACK"), id.into_iter().collect::<Vec<_>>());
    sim.send(other, &Packet::PingReq);
    assert_eq!(sim.received(other), vec![Received::PingResp]);
    assert!(sim.is_connected(other));

    for &g in &greedy {
        // Its input waits with the host: the PUBLISHes beyond its share were not taken.
        assert!(sim.is_stalled(g));
        assert!(sim.unsent_len(g) > 0);
        sim.resume_reading(g);
        let acks = acks(&sim.received(g), "PUBACK");
        let expected: Vec<PacketId> = (1..=GREEDY_PUBLISHES)
            .map(|i| PacketId::new(i).unwrap())
            .collect();
        // Every PUBLISH acknowledged, in the order sent [MQTT-4.6.0-2].
        assert_eq!(acks, expected);
        assert!(!sim.is_stalled(g));
        assert_eq!(sim.unsent_len(g), 0);
    }
}

/// A QoS 2 publisher that does not read: held back at its share through both halves of
/// the exchange, every PUBREC and then every PUBCOMP arrives, in order.
fn a_qos2_publisher_is_held_back_through_both_halves<S: BrokerStorage>(config: Config) {
    let mut sim: Sim<S> = Sim::new(config);
    let publisher = sim.connect(V5, "qos2", true, 0);
    sim.stop_reading(publisher);
    let ids: Vec<PacketId> = (0..6u8)
        .filter_map(|i| sim.publish(publisher, "bulk", &[i], QOS2, false))
        .collect();
    assert!(sim.is_stalled(publisher));
    sim.resume_reading(publisher);
    assert_eq!(acks(&sim.received(publisher), "PUBREC"), ids);
    sim.stop_reading(publisher);
    for id in &ids {
        sim.acknowledge(publisher, &Received::PubRec(*id, ReasonCode::Success));
    }
    assert!(sim.is_stalled(publisher));
    sim.resume_reading(publisher);
    assert_eq!(acks(&sim.received(publisher), "PUBCOMP"), ids);
    assert!(sim.is_connected(publisher) && !sim.is_stalled(publisher));
}

/// Runs each generic test on [`SmallPool`] (`small_pool::name`) and [`Growable`]
/// (`growable::name`), with [`config`].
macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {
        mod small_pool {
            $(#[test]
            fn $name() {
                super::$name::<super::SmallPool>(super::config());
            })*
        }
        mod growable {
            $(#[test]
            fn $name() {
                super::$name::<super::Growable>(super::config());
            })*
        }
    };
}

on_both_storages!(
    greedy_publishers_do_not_starve_others,
    a_qos2_publisher_is_held_back_through_both_halves,
);

/// What the limit prevents: without it one client that publishes as many QoS 1 messages
/// as the pool holds, reading nothing, fills it, and the next client's CONNACK cannot be
/// queued: that client is closed (0x89 Server busy).
#[test]
fn without_the_limit_a_full_pool_closes_the_next_client() {
    let mut sim: Sim<SmallPool> = Sim::new(Config {
        max_pending_controls: usize::MAX,
        ..config()
    });
    let greedy = sim.connect(V3, "greedy", true, 0);
    sim.stop_reading(greedy);
    for i in 0..12u16 {
        sim.publish(greedy, "bulk", &i.to_be_bytes(), QOS1, false);
    }
    assert!(sim.is_connected(greedy));
    let other = sim.connect_with(&fulmar_core::sim::connect_packet(V3, "other", true, 0));
    assert!(!sim.is_connected(other));
    assert_eq!(sim.closed_reason(other), Some(ReasonCode::ServerBusy));
}
