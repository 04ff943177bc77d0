//! Backpressure (`OverflowPolicy::Backpressure`, ARCHITECTURE.md invariant 1): when an
//! online subscriber's queue is full, the publisher is slowed — its PUBLISH is neither
//! acknowledged nor consumed — instead of its message being dropped after a PUBACK. Runs on
//! both storage back-ends through the simulation, whose clients keep unconsumed bytes the
//! way a socket buffer does.
#![cfg(feature = "alloc")]

#[macro_use]
mod common_broker;

use common_broker::*;
use fulmar_core::broker::{BrokerStorage, Config, OverflowPolicy};
use fulmar_core::codec::{PacketId, ReasonCode};
use fulmar_core::sim::{ClientHandle, Received, Sim, connect_packet};

storage_tests!(
    full_online_queue_stalls_publisher_and_loses_nothing,
    stalled_publisher_resumes_at_half_queue_not_per_message,
    offline_subscriber_never_stalls_publisher,
    subscriber_leaving_resumes_publisher,
    stalled_publisher_does_not_block_others,
    stalled_publisher_can_disconnect,
    qos2_publisher_stalls_before_pubrec,
    qos0_to_a_full_queue_is_dropped_not_waited_for,
    qos0_publishers_wait_too_when_configured,
);

const QUEUE: usize = 4;
const INFLIGHT: u16 = 2;

fn config() -> Config {
    Config {
        max_queued_messages: QUEUE,
        max_inflight: INFLIGHT,
        overflow_policy: OverflowPolicy::Backpressure,
        ..Config::default()
    }
}

/// A 3.1.1 QoS 1 subscriber to `t` that does not acknowledge until told, so its in-flight
/// window (2) and then its queue (4) fill up.
fn slow_subscriber<S: BrokerStorage>(sim: &mut Sim<S>, id: &str, clean: bool) -> ClientHandle {
    let sub = sim.connect(V3, id, clean, 0);
    sim.received(sub);
    assert_eq!(sim.subscribe(sub, "t", QOS1), ReasonCode::GrantedQoS1);
    sub
}

fn payloads(received: &[Received]) -> Vec<Vec<u8>> {
    received
        .iter()
        .filter_map(|r| match r {
            Received::Publish { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

fn pubacks(received: &[Received]) -> Vec<PacketId> {
    received
        .iter()
        .filter_map(|r| match r {
            Received::PubAck(id, _) => Some(*id),
            _ => None,
        })
        .collect()
}

/// Publishes `n` QoS 1 messages numbered from `first`.
fn publish_numbered<S: BrokerStorage>(
    sim: &mut Sim<S>,
    publisher: ClientHandle,
    first: usize,
    n: usize,
) {
    for i in first..first + n {
        sim.publish(publisher, "t", i.to_string().as_bytes(), QOS1, false);
    }
}

/// Acknowledges whatever the subscriber has until `want` messages arrived in all; returns
/// them in arrival order.
fn drain_subscriber<S: BrokerStorage>(
    sim: &mut Sim<S>,
    sub: ClientHandle,
    mut got: Vec<Received>,
    want: usize,
) -> Vec<Vec<u8>> {
    let mut all = payloads(&got);
    for _ in 0..10 * want {
        if all.len() >= want {
            break;
        }
        for r in &got {
            sim.acknowledge(sub, r);
        }
        got = sim.received(sub);
        all.extend(payloads(&got));
    }
    all
}

/// A slow subscriber "sub" and a 3.1.1 publisher "pub" that has sent 20 QoS 1 messages
/// to it: 2 in flight, 4 queued, the publisher stalled on the seventh.
fn flooded<S: BrokerStorage>() -> (Sim<S>, ClientHandle, ClientHandle) {
    let mut sim = Sim::<S>::new(config());
    let sub = slow_subscriber(&mut sim, "sub", true);
    let publisher = sim.connect(V3, "pub", true, 0);
    sim.received(publisher);
    publish_numbered(&mut sim, publisher, 0, 20);
    (sim, sub, publisher)
}

fn numbers(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| i.to_string().into_bytes()).collect()
}

fn full_online_queue_stalls_publisher_and_loses_nothing<S: BrokerStorage>() {
    let (mut sim, sub, publisher) = flooded::<S>();

    // Two in flight, four queued: six taken and acknowledged, the seventh waits.
    let first = sim.received(sub);
    assert_eq!(payloads(&first), numbers(0..2));
    assert_eq!(pubacks(&sim.received(publisher)).len(), 6);
    assert!(sim.is_stalled(publisher), "the publisher must be held back");
    assert!(sim.unsent_len(publisher) > 0, "its PUBLISHes wait unread");
    assert_eq!(sim.broker.stats().messages_dropped, 0);

    // As the subscriber acknowledges, the held PUBLISHes go through, in order.
    let all = drain_subscriber(&mut sim, sub, first, 20);
    assert_eq!(all, numbers(0..20), "every message, in publish order");
    assert_eq!(pubacks(&sim.received(publisher)).len(), 14);
    assert!(!sim.is_stalled(publisher));
    assert_eq!(sim.unsent_len(publisher), 0);
    assert_eq!(sim.broker.stats().messages_dropped, 0);
}

fn stalled_publisher_resumes_at_half_queue_not_per_message<S: BrokerStorage>() {
    let (mut sim, sub, publisher) = flooded::<S>();
    let first = sim.received(sub);
    sim.received(publisher);

    // One acknowledgment moves one queued message into flight: the queue (3 of 4) is
    // not down to half yet, so the publisher stays stalled.
    sim.acknowledge(sub, &first[0]);
    assert!(sim.is_stalled(publisher));
    assert!(pubacks(&sim.received(publisher)).is_empty());
    // The second brings it to 2 of 4: the publisher resumes and fills the queue again.
    sim.acknowledge(sub, &first[1]);
    assert_eq!(pubacks(&sim.received(publisher)).len(), 2);
    assert!(sim.is_stalled(publisher));
}

fn offline_subscriber_never_stalls_publisher<S: BrokerStorage>() {
    let mut sim = Sim::<S>::new(Config {
        max_session_expiry: 3600,
        ..config()
    });
    let sub = slow_subscriber(&mut sim, "sub", false);
    sim.disconnect(sub, ReasonCode::Success);
    let publisher = sim.connect(V3, "pub", true, 0);
    sim.received(publisher);
    publish_numbered(&mut sim, publisher, 0, 10);

    // An offline session cannot drain: its overflow is dropped (and counted) rather than
    // halting the publisher, as with DropNew.
    assert!(!sim.is_stalled(publisher));
    assert_eq!(pubacks(&sim.received(publisher)).len(), 10);
    assert_eq!(sim.broker.stats().messages_dropped, 6);
    // `connect_with`: `connect` would take the queued messages with the CONNACK.
    let back = sim.connect_with(&connect_packet(V3, "sub", false, 0));
    let got = sim.received(back);
    assert_eq!(payloads(&got), numbers(0..2), "the first in flight");
    assert_eq!(drain_subscriber(&mut sim, back, got, 4), numbers(0..4));
}

/// A QoS 0 message for a client whose queue is full is dropped for it and counted: its
/// publisher is never held back (`Config::qos0_backpressure` is off by default).
fn qos0_to_a_full_queue_is_dropped_not_waited_for<S: BrokerStorage>() {
    let (mut sim, sub, publisher) = flooded::<S>();
    assert!(sim.is_stalled(publisher));
    let first = sim.received(sub);
    let q0 = sim.connect(V3, "q0", true, 0);
    sim.received(q0);
    sim.publish(q0, "t", b"zero", QOS0, false);
    assert!(!sim.is_stalled(q0), "a QoS 0 publisher is not held back");
    assert_eq!(sim.unsent_len(q0), 0, "its PUBLISH was taken");
    assert_eq!(sim.broker.stats().messages_dropped, 1);
    // The QoS 1 messages still all arrive, in order; the QoS 0 one does not.
    assert_eq!(drain_subscriber(&mut sim, sub, first, 20), numbers(0..20));
}

/// With `qos0_backpressure`, a QoS 0 publisher waits for the full queue like a QoS 1 one,
/// and nothing is dropped.
fn qos0_publishers_wait_too_when_configured<S: BrokerStorage>() {
    let mut sim = Sim::<S>::new(Config {
        qos0_backpressure: true,
        ..config()
    });
    let sub = slow_subscriber(&mut sim, "sub", true);
    let publisher = sim.connect(V3, "pub", true, 0);
    sim.received(publisher);
    publish_numbered(&mut sim, publisher, 0, 6);
    let first = sim.received(sub);
    let q0 = sim.connect(V3, "q0", true, 0);
    sim.received(q0);
    sim.publish(q0, "t", b"zero", QOS0, false);
    assert!(sim.is_stalled(q0));
    assert!(sim.unsent_len(q0) > 0);
    let mut want = numbers(0..6);
    want.push(b"zero".to_vec());
    assert_eq!(drain_subscriber(&mut sim, sub, first, 7), want);
    assert_eq!(sim.broker.stats().messages_dropped, 0);
}

fn subscriber_leaving_resumes_publisher<S: BrokerStorage>() {
    let (mut sim, sub, publisher) = flooded::<S>();
    assert!(sim.is_stalled(publisher));
    sim.received(publisher);

    // The subscriber vanishes (its clean session ends): nobody holds the publisher back.
    sim.drop_connection(sub);
    assert!(!sim.is_stalled(publisher));
    assert_eq!(pubacks(&sim.received(publisher)).len(), 14);
}

fn stalled_publisher_does_not_block_others<S: BrokerStorage>() {
    let (mut sim, _sub, publisher) = flooded::<S>();
    assert!(sim.is_stalled(publisher));

    let other_sub = sim.connect(V5, "other-sub", true, 0);
    assert_eq!(sim.subscribe(other_sub, "u", QOS1), ReasonCode::GrantedQoS1);
    let other_pub = sim.connect(V5, "other-pub", true, 0);
    sim.received(other_pub);
    sim.received(other_sub);
    sim.publish(other_pub, "u", b"hello", QOS1, false);
    assert_eq!(payloads(&sim.received(other_sub)), vec![b"hello".to_vec()]);
    assert_eq!(pubacks(&sim.received(other_pub)).len(), 1);
    assert!(sim.is_stalled(publisher));
}

fn stalled_publisher_can_disconnect<S: BrokerStorage>() {
    let (mut sim, sub, publisher) = flooded::<S>();
    assert!(sim.is_stalled(publisher));
    sim.drop_connection(publisher);

    // The held-back messages were never acknowledged, so dropping them is the publisher's
    // to retry; the six taken ones are all delivered.
    let first = sim.received(sub);
    assert_eq!(drain_subscriber(&mut sim, sub, first, 6), numbers(0..6));
    let again = sim.connect(V3, "pub", true, 0);
    sim.received(again);
    sim.publish(again, "t", b"after", QOS1, false);
    assert_eq!(pubacks(&sim.received(again)).len(), 1);
}

fn qos2_publisher_stalls_before_pubrec<S: BrokerStorage>() {
    let mut sim = Sim::<S>::new(config());
    let sub = slow_subscriber(&mut sim, "sub", true);
    let publisher = sim.connect(V5, "pub", true, 0);
    sim.received(publisher);
    for i in 0..10 {
        sim.publish(publisher, "t", i.to_string().as_bytes(), QOS2, false);
    }
    let pubrecs = |got: &[Received]| {
        got.iter()
            .filter(|r| matches!(r, Received::PubRec(_, ReasonCode::Success)))
            .count()
    };
    assert_eq!(pubrecs(&sim.received(publisher)), 6);
    assert!(sim.is_stalled(publisher));
    let first = sim.received(sub);
    let all = drain_subscriber(&mut sim, sub, first, 10);
    assert_eq!(all, numbers(0..10));
    assert_eq!(pubrecs(&sim.received(publisher)), 4);
}
