//! Replay: for random histories, a broker rebuilt from the persistence records another
//! broker emitted holds the same durable state — sessions, subscriptions, queued and
//! in-flight QoS 1/2 messages, retained messages.
#![cfg(feature = "alloc")]

use std::collections::BTreeMap;

use fulmar_core::broker::{Broker, Config, Growable, PersistOp};
use fulmar_core::codec::{List, Property, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use fulmar_core::sim::{ClientHandle, Received, Sim, connect_packet};
use fulmar_core::time::{Duration, Instant};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Connect {
        client: usize,
        v5: bool,
        clean: bool,
        expiry: u32,
    },
    Subscribe {
        client: usize,
        filter: usize,
        qos: u8,
    },
    Unsubscribe {
        client: usize,
        filter: usize,
    },
    Publish {
        client: usize,
        topic: usize,
        qos: u8,
        retain: bool,
        payload: u8,
    },
    AckAll {
        client: usize,
    },
    Drop {
        client: usize,
    },
    Disconnect {
        client: usize,
    },
    Advance {
        seconds: u8,
    },
}

const FILTERS: [&str; 5] = ["a/#", "a/b", "+/c", "$share/g/a/+", "b"];
const TOPICS: [&str; 4] = ["a/b", "a/c", "b", "x/c"];

fn op() -> impl Strategy<Value = Op> {
    let client = 0usize..4;
    prop_oneof![
        (
            client.clone(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(0u32), Just(60), Just(3600)]
        )
            .prop_map(|(client, v5, clean, expiry)| Op::Connect {
                client,
                v5,
                clean,
                expiry
            }),
        (client.clone(), 0..FILTERS.len(), 0u8..3).prop_map(|(client, filter, qos)| {
            Op::Subscribe {
                client,
                filter,
                qos,
            }
        }),
        (client.clone(), 0..FILTERS.len())
            .prop_map(|(client, filter)| Op::Unsubscribe { client, filter }),
        (
            client.clone(),
            0..TOPICS.len(),
            0u8..3,
            any::<bool>(),
            any::<u8>()
        )
            .prop_map(|(client, topic, qos, retain, payload)| Op::Publish {
                client,
                topic,
                qos,
                retain,
                payload
            }),
        client.clone().prop_map(|client| Op::AckAll { client }),
        client.clone().prop_map(|client| Op::Drop { client }),
        client.prop_map(|client| Op::Disconnect { client }),
        (1u8..100).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

type Store = BTreeMap<Vec<u8>, Vec<u8>>;

/// Applies every pending persistence op to `store`, as a host would.
fn drain(broker: &mut Broker<Growable>, store: &mut Store) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match broker.poll_persist(&mut buf).expect("buffer large enough") {
            None => return,
            Some(PersistOp::Put { key, value }) => {
                store.insert(key.to_vec(), value.to_vec());
            }
            Some(PersistOp::Delete { key }) => {
                store.remove(key);
            }
            Some(PersistOp::DeleteSession { prefix }) => {
                store.retain(|k, _| !k.starts_with(prefix));
            }
            Some(PersistOp::Reset) => store.clear(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct SessionSnapshot {
    expiry: u32,
    subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    queue: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    sessions: BTreeMap<String, SessionSnapshot>,
    retained: Vec<(String, Vec<u8>, QoS)>,
}

fn snapshot(broker: &Broker<Growable>) -> Snapshot {
    let mut ids = Vec::new();
    broker.for_each_session(|s| {
        if s.expiry_interval() != 0 {
            ids.push((s.client_id().to_string(), s.expiry_interval()));
        }
    });
    let mut sessions = BTreeMap::new();
    for (id, expiry) in ids {
        let mut subscriptions = Vec::new();
        let mut scratch = [0u8; 256];
        broker.for_each_subscription(&id, &mut scratch, |f, o, i| {
            subscriptions.push((f.to_string(), o, i.map(|i| i.get())))
        });
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        let mut queue = Vec::new();
        broker.for_each_queued(&id, |q| {
            if q.qos > QoS::AtMostOnce {
                queue.push(format!(
                    "{:?} {:?} {:?} {} {:?} {:?}",
                    q.topic, q.payload, q.qos, q.retain, q.state, q.packet_id
                ));
            }
        });
        sessions.insert(
            id,
            SessionSnapshot {
                expiry,
                subscriptions,
                queue,
            },
        );
    }
    let mut retained = Vec::new();
    broker.for_each_retained(|t, p, q| retained.push((t.to_string(), p.to_vec(), q)));
    retained.sort();
    Snapshot { sessions, retained }
}

fn config() -> Config {
    Config {
        persistence: true,
        ..Config::default()
    }
}

fn run(ops: &[Op]) -> (Snapshot, Snapshot) {
    let mut sim = Sim::<Growable>::new(config());
    let mut store = Store::new();
    let mut clients: [Option<ClientHandle>; 4] = [None; 4];
    for op in ops {
        match *op {
            Op::Connect {
                client,
                v5,
                clean,
                expiry,
            } => {
                if let Some(old) = clients[client].take() {
                    sim.drop_connection(old);
                }
                let id = format!("c{client}");
                let props = [Property::SessionExpiryInterval(expiry)];
                let mut connect = connect_packet(
                    if v5 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V3_1_1
                    },
                    &id,
                    clean,
                    0,
                );
                if v5 {
                    connect.properties = List::new(&props);
                }
                let handle = sim.connect_with(&connect);
                clients[client] = Some(handle);
            }
            Op::Subscribe {
                client,
                filter,
                qos,
            } => {
                if let Some(c) = clients[client] {
                    let options = SubscriptionOptions::qos(QoS::from_bits(qos).unwrap());
                    sim.subscribe_with(c, FILTERS[filter], options, Some(client as u32 + 1));
                }
            }
            Op::Unsubscribe { client, filter } => {
                if let Some(c) = clients[client] {
                    sim.unsubscribe(c, FILTERS[filter]);
                }
            }
            Op::Publish {
                client,
                topic,
                qos,
                retain,
                payload,
            } => {
                if let Some(c) = clients[client] {
                    sim.publish(
                        c,
                        TOPICS[topic],
                        &[payload],
                        QoS::from_bits(qos).unwrap(),
                        retain,
                    );
                }
            }
            Op::AckAll { client } => {
                if let Some(c) = clients[client] {
                    for r in sim.received(c) {
                        sim.acknowledge(c, &r);
                        if let Received::PubRec(id, _) = r {
                            sim.acknowledge(c, &Received::PubRec(id, ReasonCode::Success));
                        }
                    }
                }
            }
            Op::Drop { client } => {
                if let Some(c) = clients[client].take() {
                    sim.drop_connection(c);
                }
            }
            Op::Disconnect { client } => {
                if let Some(c) = clients[client].take() {
                    sim.disconnect(c, ReasonCode::Success);
                }
            }
            Op::Advance { seconds } => sim.advance(Duration::from_secs(u64::from(seconds))),
        }
        drain(&mut sim.broker, &mut store);
    }
    let before = snapshot(&sim.broker);
    let mut rebuilt = Broker::<Growable>::new(config(), 7);
    for (key, value) in &store {
        rebuilt
            .restore(key, value, Instant::ZERO)
            .expect("every stored record restores");
    }
    // Restoring must not report the state back as changes.
    let mut buf = vec![0u8; 1 << 16];
    assert_eq!(rebuilt.poll_persist(&mut buf).unwrap(), None);
    (before, snapshot(&rebuilt))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn rebuilt_broker_has_the_same_durable_state(ops in prop::collection::vec(op(), 1..40)) {
        let (before, after) = run(&ops);
        prop_assert_eq!(before, after);
    }
}

#[test]
fn overflowing_the_change_list_resets_and_dumps_everything() {
    fulmar_core::fixed_broker_storage! {
        struct Small {
            connections: 4, sessions: 4, subscriptions: 16, topic_nodes: 32, share_groups: 2,
            text: 16, messages: 64, queue: 64, controls: 16, inbound: 8, aliases: 4,
            retained: 8, blob_bytes: 4096, slots: 64, pending: 4,
        }
    }
    let mut sim = Sim::<Small>::new(config());
    let c = sim.connect(ProtocolVersion::V3_1_1, "keep", false, 0);
    for f in ["a", "b", "c", "d", "e", "f"] {
        sim.subscribe(c, f, QoS::AtLeastOnce);
    }
    let mut buf = [0u8; 512];
    assert_eq!(
        sim.broker.poll_persist(&mut buf).unwrap(),
        Some(PersistOp::Reset)
    );
    let mut subscriptions = 0;
    let mut sessions = 0;
    while let Some(op) = sim.broker.poll_persist(&mut buf).unwrap() {
        let PersistOp::Put { key, .. } = op else {
            panic!("only puts after a reset: {op:?}")
        };
        match fulmar_core::persist::Key::decode(key).unwrap() {
            fulmar_core::persist::Key::Session(_) => sessions += 1,
            fulmar_core::persist::Key::Subscription(..) => subscriptions += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((sessions, subscriptions), (1, 6));
}

/// A host whose store is full of deleted keys asks for a rewrite: a reset, then the
/// live state only (a session, its subscription and the message in flight to it, a
/// retained message; not the retained message cleared before), and nothing more once
/// done.
#[test]
fn a_rewrite_resets_and_reports_only_the_live_state() {
    let mut sim = Sim::<Growable>::new(config());
    let c = sim.connect(ProtocolVersion::V3_1_1, "keep", false, 0);
    sim.subscribe(c, "a/#", QoS::AtLeastOnce);
    let p = sim.connect(ProtocolVersion::V3_1_1, "pub", true, 0);
    sim.publish(p, "a/b", b"m", QoS::AtLeastOnce, false);
    sim.publish(p, "r", b"kept", QoS::AtMostOnce, true);
    sim.publish(p, "gone", b"x", QoS::AtMostOnce, true);
    sim.publish(p, "gone", b"", QoS::AtMostOnce, true);
    let mut store = Store::new();
    drain(&mut sim.broker, &mut store);
    let live = store.clone();
    assert!(
        live.keys().any(|k| k.starts_with(b"Rr")) && !live.keys().any(|k| k.starts_with(b"Rgone"))
    );

    sim.broker.persist_rewrite();
    let mut buf = vec![0u8; 1 << 16];
    assert_eq!(
        sim.broker.poll_persist(&mut buf).unwrap(),
        Some(PersistOp::Reset)
    );
    let mut rewritten = Store::new();
    drain(&mut sim.broker, &mut rewritten);
    assert_eq!(rewritten, live);
    assert_eq!(sim.broker.poll_persist(&mut buf).unwrap(), None);
}

/// A damaged or foreign store must not make the broker send what no client may receive: a
/// stored message whose topic name has a wildcard ([MQTT-3.3.2-2]) or whose 5.0
/// properties do not parse is refused at restore (found by the `restore` fuzz target).
#[test]
fn a_stored_message_no_client_may_receive_is_refused_at_restore() {
    use fulmar_core::persist::{
        Key, MessageRecord, PersistError, RetainedRecord, StoredMessage, encode_value,
    };
    let stored = |topic, properties| StoredMessage {
        topic,
        qos: 1,
        retain: false,
        expires_at: None,
        properties,
        payload: b"x",
    };
    let record = |key: Key<'_>, message: StoredMessage<'_>, queued: bool| {
        let mut k = [0u8; 64];
        let mut v = [0u8; 256];
        let k_len = key.encode(&mut k).unwrap();
        let v_len = if queued {
            let record = MessageRecord {
                qos: 1,
                retain: false,
                state: 0,
                packet_id: None,
                identifiers: heapless::Vec::new(),
                message: Some(message),
            };
            encode_value(&record, &mut v).unwrap()
        } else {
            encode_value(&RetainedRecord { message }, &mut v).unwrap()
        };
        (k[..k_len].to_vec(), v[..v_len].to_vec())
    };
    // A property block that ends inside a property: 0x26 (user property) with nothing after.
    let cut_property: &[u8] = &[0x26];
    let mut broker = Broker::<Growable>::new(config(), 7);
    for (key, value) in [
        record(Key::Message("c", 1), stored("a/+", &[]), true),
        record(Key::Message("c", 2), stored("a/b", cut_property), true),
        record(Key::Retained("a/#"), stored("a/#", &[]), false),
    ] {
        assert_eq!(
            broker.restore(&key, &value, Instant::ZERO),
            Err(PersistError::Malformed)
        );
    }
    let (key, value) = record(Key::Message("c", 3), stored("a/b", &[]), true);
    assert_eq!(broker.restore(&key, &value, Instant::ZERO), Ok(()));
    assert_eq!(broker.retained_count(), 0);

    // The session's client gets the one valid message only.
    let mut sim = Sim::with_broker(broker);
    let c = sim.connect_with(&connect_packet(ProtocolVersion::V5, "c", false, 0));
    let topics: Vec<String> = sim
        .received(c)
        .into_iter()
        .filter_map(|r| match r {
            Received::Publish { topic, .. } => Some(topic),
            _ => None,
        })
        .collect();
    assert_eq!(topics, ["a/b"]);
}
