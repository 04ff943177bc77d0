//! Shards: brokers that forward to each other behave as one broker — plain and shared
//! subscriptions across shards, retained messages everywhere and converging, interest
//! following subscriptions, backpressure across shards.
#![cfg(feature = "alloc")]

use std::collections::BTreeMap;

use fulmar_core::broker::{
    Broker, Config, ForwardError, Growable, OverflowPolicy, OwnedForward, PeerId,
};
use fulmar_core::codec::{Properties, Property, ProtocolVersion, QoS};
use fulmar_core::sim::{ClientHandle, Received, Sim};

/// Brokers wired to each other the way a host does it.
struct Cluster {
    sims: Vec<Sim<Growable>>,
    /// `peers[i][j]`: broker `i`'s stand-in for broker `j`.
    peers: Vec<Vec<Option<PeerId>>>,
    /// Per broker, how many of its sessions subscribe to each filter.
    interest: Vec<BTreeMap<String, usize>>,
    /// Copies a broker refused for now (backpressure), per (to, from), in order.
    waiting: BTreeMap<(usize, usize), Vec<OwnedForward>>,
}

impl Cluster {
    fn new(n: usize, config: Config) -> Self {
        let mut sims: Vec<Sim<Growable>> = (0..n)
            .map(|i| {
                let mut broker = Broker::new(config.clone(), 7 + i as u64);
                broker.enable_sharding(i as u8, n as u8);
                Sim::with_broker(broker)
            })
            .collect();
        let peers = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (i != j).then(|| {
                            let now = sims[i].now();
                            sims[i]
                                .broker
                                .peer_open(&format!("$shard/{j}"), now)
                                .unwrap()
                        })
                    })
                    .collect()
            })
            .collect();
        Self {
            sims,
            peers,
            interest: vec![BTreeMap::new(); n],
            waiting: BTreeMap::new(),
        }
    }

    /// Moves interest and copies between the brokers until nothing moves.
    fn settle(&mut self) {
        let n = self.sims.len();
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..n {
                self.sims[i].pump();
                while let Some(change) = self.sims[i].broker.poll_interest() {
                    moved = true;
                    let count = self.interest[i].entry(change.filter.clone()).or_default();
                    let announce = if change.added {
                        *count += 1;
                        *count == 1
                    } else {
                        *count -= 1;
                        *count == 0
                    };
                    if announce {
                        for j in (0..n).filter(|&j| j != i) {
                            let peer = self.peers[j][i].unwrap();
                            if change.added {
                                self.sims[j]
                                    .broker
                                    .peer_subscribe(peer, &change.filter)
                                    .unwrap();
                            } else {
                                assert!(self.sims[j].broker.peer_unsubscribe(peer, &change.filter));
                            }
                        }
                    }
                }
                for j in (0..n).filter(|&j| j != i) {
                    let peer = self.peers[i][j].unwrap();
                    let now = self.sims[i].now();
                    while let Some(f) = self.sims[i].broker.peer_next(peer, now) {
                        moved = true;
                        self.waiting.entry((j, i)).or_default().push(f.to_owned());
                    }
                }
            }
            // Deliver waiting copies in order, stopping a stream at the first refusal.
            let keys: Vec<(usize, usize)> = self.waiting.keys().copied().collect();
            for (to, from) in keys {
                let peer = self.peers[to][from].unwrap();
                if self.sims[to].broker.peer_stalled(peer) {
                    continue;
                }
                let queue = self.waiting.remove(&(to, from)).unwrap_or_default();
                let mut rest = Vec::new();
                for (k, copy) in queue.iter().enumerate() {
                    let forward = copy.forward();
                    let now = self.sims[to].now();
                    match self.sims[to].broker.forward_publish(peer, &forward, now) {
                        Err(ForwardError::Stalled) => {
                            rest = queue[k..].to_vec();
                            break;
                        }
                        Err(other) => panic!("forward refused: {other:?}"),
                        Ok(_) => {
                            moved = true;
                            let back = self.peers[from][to].unwrap();
                            assert!(self.sims[from].broker.peer_ack(back, copy.token()));
                        }
                    }
                }
                if !rest.is_empty() {
                    self.waiting.insert((to, from), rest);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster does not settle");
    }

    fn connect(&mut self, shard: usize, id: &str) -> ClientHandle {
        let c = self.sims[shard].connect(ProtocolVersion::V5, id, true, 0);
        self.settle();
        c
    }

    fn subscribe(&mut self, shard: usize, client: ClientHandle, filter: &str, qos: QoS) {
        self.sims[shard].subscribe(client, filter, qos);
        self.sims[shard].received(client);
        self.settle();
    }

    fn publish(
        &mut self,
        shard: usize,
        client: ClientHandle,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) {
        self.sims[shard].publish(client, topic, payload, qos, retain);
        self.settle();
    }

    /// Payloads of the PUBLISHes a client received (acknowledging QoS 1/2 ones).
    fn payloads(&mut self, shard: usize, client: ClientHandle) -> Vec<Vec<u8>> {
        let received = self.sims[shard].received(client);
        let mut out = Vec::new();
        for r in received {
            if let Received::Publish { payload, .. } = &r {
                out.push(payload.clone());
                self.sims[shard].acknowledge(client, &r);
            }
        }
        self.settle();
        out
    }
}

#[test]
fn a_message_reaches_subscribers_on_every_shard_once_with_its_properties() {
    let mut c = Cluster::new(3, Config::default());
    let publisher = c.connect(0, "pub");
    let near = c.connect(0, "near");
    let far = c.connect(1, "far");
    let idle = c.connect(2, "idle");
    c.subscribe(0, near, "t/#", QoS::AtLeastOnce);
    c.subscribe(1, far, "t/+", QoS::AtLeastOnce);
    c.subscribe(1, far, "t/#", QoS::AtLeastOnce);

    let user = [
        Property::UserProperty("k", "v"),
        Property::MessageExpiryInterval(60),
    ];
    c.sims[0].publish_with(
        publisher,
        "t/a",
        b"one",
        QoS::AtLeastOnce,
        false,
        Properties::new(&user),
    );
    c.settle();
    let got = c.sims[1].received(far);
    assert_eq!(
        got.len(),
        1,
        "one copy per session, overlapping filters merged"
    );
    match &got[0] {
        Received::Publish {
            topic,
            payload,
            qos,
            user_properties,
            message_expiry,
            ..
        } => {
            assert_eq!(topic, "t/a");
            assert_eq!(payload, b"one");
            assert_eq!(*qos, QoS::AtLeastOnce);
            assert_eq!(user_properties, &[("k".to_owned(), "v".to_owned())]);
            assert!(message_expiry.is_some_and(|s| s <= 60 && s > 0));
        }
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
    assert_eq!(c.payloads(0, near), [b"one".to_vec()]);
    assert!(c.payloads(2, idle).is_empty());
    // Shard 2 has no subscriber: nothing was forwarded to it.
    let to_two = c.peers[0][2].unwrap();
    assert_eq!(c.sims[0].broker.peer_backlog(to_two), 0);
    assert_eq!(c.sims[2].broker.stats().messages_received, 0);
}

#[test]
fn interest_follows_unsubscribe_and_session_end() {
    let mut c = Cluster::new(2, Config::default());
    let publisher = c.connect(0, "pub");
    let far = c.connect(1, "far");
    c.subscribe(1, far, "a", QoS::AtMostOnce);
    let to_one = c.peers[0][1].unwrap();
    let mirrored = |c: &Cluster| {
        c.sims[0]
            .broker
            .session("$shard/1")
            .map_or(0, |s| s.subscription_count())
    };
    assert_eq!(mirrored(&c), 1, "shard 0 stands in for it");
    assert_eq!(
        c.sims[0].broker.subscription_count(),
        0,
        "and does not count it as its own"
    );
    c.sims[1].unsubscribe(far, "a");
    c.settle();
    assert_eq!(mirrored(&c), 0);
    c.subscribe(1, far, "b", QoS::AtMostOnce);
    assert_eq!(mirrored(&c), 1);
    c.sims[1].disconnect(far, fulmar_core::codec::ReasonCode::Success);
    c.settle();
    assert_eq!(mirrored(&c), 0, "a clean session's end");
    assert_eq!(c.sims[0].broker.peer_backlog(to_one), 0);
    c.publish(0, publisher, "b", b"x", QoS::AtMostOnce, false);
    assert_eq!(c.sims[1].broker.stats().messages_received, 0);
}

#[test]
fn a_shared_group_across_shards_gets_each_message_exactly_once() {
    // [MQTT-4.8.2-2]: each message to one member of the group, across every shard.
    let mut c = Cluster::new(2, Config::default());
    let publisher = c.connect(0, "pub");
    let members = [
        (0, c.connect(0, "m0")),
        (0, c.connect(0, "m1")),
        (1, c.connect(1, "m2")),
        (1, c.connect(1, "m3")),
    ];
    for (shard, m) in members {
        c.subscribe(shard, m, "$share/g/jobs/#", QoS::AtLeastOnce);
    }
    // A plain subscriber on shard 1 as well: it gets every message, besides the group.
    let watcher = c.connect(1, "watch");
    c.subscribe(1, watcher, "jobs/#", QoS::AtLeastOnce);
    for i in 0..40u8 {
        c.publish(0, publisher, "jobs/x", &[i], QoS::AtLeastOnce, false);
    }
    let mut all: Vec<u8> = Vec::new();
    let mut per_shard = [0usize; 2];
    for (shard, m) in members {
        let got = c.payloads(shard, m);
        per_shard[shard] += got.len();
        all.extend(got.into_iter().flatten());
    }
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<u8>>(), "each message once");
    assert!(per_shard[0] > 0 && per_shard[1] > 0, "{per_shard:?}");
    assert_eq!(c.payloads(1, watcher).len(), 40);
}

#[test]
fn retained_messages_are_everywhere_and_converge() {
    let mut c = Cluster::new(2, Config::default());
    let a = c.connect(0, "a");
    let b = c.connect(1, "b");
    // Retained with nobody subscribed anywhere: still replicated.
    c.publish(0, a, "state/x", b"v1", QoS::AtLeastOnce, true);
    assert_eq!(c.sims[1].broker.retained_count(), 1, "replicated");
    // Each shard counts its own client sessions (not its stand-ins for the others) and
    // every retained message; added up, one broker's figures.
    let mut total = c.sims[0].broker.stats();
    total.add_shard(&c.sims[1].broker.stats());
    assert_eq!((total.sessions, total.retained), (2, 1));
    let late = c.connect(1, "late");
    c.sims[1].subscribe(late, "state/#", QoS::AtLeastOnce);
    assert_eq!(c.payloads(1, late), [b"v1".to_vec()]);

    // Two shards change the same topic before either hears of the other's change.
    c.sims[0].publish(a, "state/y", b"from-0", QoS::AtMostOnce, true);
    c.sims[1].publish(b, "state/y", b"from-1", QoS::AtMostOnce, true);
    c.settle();
    let retained = |sim: &Sim<Growable>| {
        let mut v = Vec::new();
        sim.broker
            .for_each_retained(|t, p, _| v.push((t.to_owned(), p.to_vec())));
        v.sort();
        v
    };
    assert_eq!(
        retained(&c.sims[0]),
        retained(&c.sims[1]),
        "replicas converge"
    );
    assert_eq!(c.sims[0].broker.retained_count(), 2);

    // A clear on one shard clears it everywhere, and an older change does not revive it.
    c.publish(1, b, "state/x", b"", QoS::AtMostOnce, true);
    assert_eq!(c.sims[0].broker.retained_count(), 1);
    assert_eq!(retained(&c.sims[0]), retained(&c.sims[1]));
}

#[test]
fn a_full_subscriber_on_another_shard_holds_the_forwarded_copies_back() {
    let config = Config {
        max_queued_messages: 4,
        max_inflight: 2,
        overflow_policy: OverflowPolicy::Backpressure,
        ..Config::default()
    };
    let mut c = Cluster::new(2, config);
    let publisher = c.connect(0, "pub");
    // 3.1.1: the broker's in-flight limit (2) applies, then the queue (4) fills.
    let slow = c.sims[1].connect(ProtocolVersion::V3_1_1, "slow", true, 0);
    c.subscribe(1, slow, "s", QoS::AtLeastOnce);
    // The subscriber reads nothing: its inflight window and queue fill.
    for i in 0..200u8 {
        c.sims[0].publish(publisher, "s", &[i], QoS::AtLeastOnce, false);
        c.settle();
    }
    let peer = c.peers[1][0].unwrap();
    assert!(
        c.sims[1].broker.peer_stalled(peer),
        "shard 1 holds shard 0's copies back"
    );
    assert!(!c.waiting.is_empty());
    // Reading drains it; every message arrives, in order, none lost.
    let mut got = Vec::new();
    for _ in 0..400 {
        let batch = c.payloads(1, slow);
        if batch.is_empty() && c.waiting.is_empty() {
            break;
        }
        got.extend(batch.into_iter().flatten());
    }
    assert_eq!(got, (0..200).collect::<Vec<u8>>());
    assert!(!c.sims[1].broker.peer_stalled(peer));
}

#[test]
fn a_retained_change_reaches_a_shard_whose_copies_are_backed_up() {
    let config = Config {
        max_queued_messages: 2,
        ..Config::default()
    };
    let mut c = Cluster::new(2, config);
    let publisher = c.connect(0, "pub");
    let far = c.connect(1, "far");
    c.subscribe(1, far, "x", QoS::AtLeastOnce);
    // Shard 1 takes nothing for now: copies pile up in shard 0's stand-in.
    let to_one = c.peers[0][1].unwrap();
    // A stand-in queues 16 times a subscriber's limit (2): the 33rd copy is one too many.
    for i in 0..33u8 {
        c.sims[0].publish(publisher, "x", &[i], QoS::AtMostOnce, false);
    }
    c.sims[0].pump();
    assert!(
        c.sims[0].broker.stats().messages_dropped > 0,
        "a plain copy beyond the queue"
    );
    let dropped = c.sims[0].broker.stats().messages_dropped;
    // A retained change is not dropped, however full the queue.
    let now = c.sims[0].now();
    c.sims[0]
        .broker
        .publish("state", b"on", QoS::AtMostOnce, true, now)
        .unwrap();
    assert_eq!(c.sims[0].broker.stats().messages_dropped, dropped);
    assert_eq!(c.sims[0].broker.peer_backlog(to_one), 33);
    c.settle();
    assert_eq!(c.sims[1].broker.retained_count(), 1);
}

#[test]
fn the_oldest_pending_copy_says_when_an_acknowledgement_may_leave() {
    let mut c = Cluster::new(2, Config::default());
    let publisher = c.connect(0, "pub");
    let far = c.connect(1, "far");
    c.subscribe(1, far, "x", QoS::AtLeastOnce);
    let peer = c.peers[0][1].unwrap();
    c.sims[0].publish(publisher, "x", b"1", QoS::AtLeastOnce, false);
    c.sims[0].pump();
    let mark = c.sims[0].broker.last_seq();
    let oldest = c.sims[0].broker.peer_oldest(peer);
    assert!(
        oldest.is_some_and(|o| o <= mark),
        "the copy is pending: the PUBACK waits"
    );
    c.settle();
    assert_eq!(c.sims[0].broker.peer_oldest(peer), None);
    assert_eq!(c.payloads(1, far), [b"1".to_vec()]);
}

#[test]
fn a_client_cannot_take_a_peer_session() {
    let mut c = Cluster::new(2, Config::default());
    let intruder = c.sims[0].open(ProtocolVersion::V5).unwrap();
    let connect = fulmar_core::sim::connect_packet(ProtocolVersion::V5, "$shard/1", true, 0);
    c.sims[0].send(intruder, &fulmar_core::codec::Packet::from(&connect));
    c.sims[0].pump();
    assert!(matches!(
        c.sims[0].received(intruder).first(),
        Some(Received::ConnAck {
            code: fulmar_core::codec::ReasonCode::ClientIdentifierNotValid,
            ..
        })
    ));
}

/// Applies a broker's pending persistence ops to `store`, as its host's committer would.
fn drain_persist(broker: &mut Broker<Growable>, store: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    use fulmar_core::broker::PersistOp;
    let mut buf = vec![0u8; 1 << 16];
    while let Some(op) = broker.poll_persist(&mut buf).expect("buffer large enough") {
        match op {
            PersistOp::Put { key, value } => {
                store.insert(key.to_vec(), value.to_vec());
            }
            PersistOp::Delete { key } => {
                store.remove(key);
            }
            PersistOp::DeleteSession { prefix } => store.retain(|k, _| !k.starts_with(prefix)),
            PersistOp::Reset => store.clear(),
        }
    }
}

#[test]
fn one_shard_persists_each_retained_topic_so_the_store_keeps_the_newest_change() {
    use fulmar_core::broker::retained_owner;
    use fulmar_core::persist::Key;
    let config = Config {
        persistence: true,
        ..Config::default()
    };
    let mut c = Cluster::new(2, config.clone());
    let a = c.connect(0, "a");
    let b = c.connect(1, "b");
    // One store per shard, so who wrote what can be told apart.
    let mut stores = [BTreeMap::new(), BTreeMap::new()];
    for (sim, store) in c.sims.iter_mut().zip(&mut stores) {
        drain_persist(&mut sim.broker, store);
    }
    // Both shards change the same topics before hearing of each other's change; some are
    // cleared again on the other shard afterwards.
    let topics: Vec<String> = (0..12).map(|i| format!("state/{i}")).collect();
    for topic in &topics {
        c.sims[0].publish(a, topic, b"from-0", QoS::AtMostOnce, true);
        c.sims[1].publish(b, topic, b"from-1", QoS::AtMostOnce, true);
    }
    c.settle();
    for topic in topics.iter().step_by(3) {
        c.publish(0, a, topic, b"", QoS::AtMostOnce, true);
    }
    c.settle();
    for (sim, store) in c.sims.iter_mut().zip(&mut stores) {
        drain_persist(&mut sim.broker, store);
    }
    for (index, store) in stores.iter().enumerate() {
        for key in store.keys() {
            if let Ok(Key::Retained(topic)) = Key::decode(key) {
                assert_eq!(
                    usize::from(retained_owner(topic, 2)),
                    index,
                    "{topic} written by shard {index}, which does not own it"
                );
            }
        }
    }
    assert!(
        stores
            .iter()
            .all(|s| s.keys().any(|k| k.first() == Some(&b'R'))),
        "both shards own some of the topics"
    );
    // The records of both shards rebuild the retained messages the shards converged on.
    let mut rebuilt = Broker::<Growable>::new(config, 99);
    for (key, value) in stores.iter().flatten() {
        rebuilt
            .restore(key, value, fulmar_core::time::Instant::ZERO)
            .expect("every stored record restores");
    }
    let retained = |broker: &Broker<Growable>| {
        let mut v = Vec::new();
        broker.for_each_retained(|t, p, _| v.push((t.to_owned(), p.to_vec())));
        v.sort();
        v
    };
    let converged = retained(&c.sims[0].broker);
    assert_eq!(converged, retained(&c.sims[1].broker));
    assert_eq!(converged.len(), 8, "4 of 12 topics cleared");
    assert_eq!(retained(&rebuilt), converged);
}

#[test]
fn a_copy_with_an_invalid_topic_name_is_refused_and_reaches_no_one() {
    // Routing trusts a stored message's topic; a copy's is the host's word, so
    // `forward_publish` checks it: a wildcard in a topic name [MQTT-3.3.2-2] or an empty
    // one [MQTT-4.7.3-1] is refused before anything is stored or routed.
    let mut c = Cluster::new(2, Config::default());
    let far = c.connect(1, "far");
    c.subscribe(1, far, "#", QoS::AtLeastOnce);
    let from = c.peers[1][0].expect("shard 1 stands in for shard 0");
    let now = fulmar_core::time::Instant::ZERO;
    let copy = |token, topic| fulmar_core::broker::Forward {
        token,
        topic,
        properties: &[],
        payload: b"x",
        qos: QoS::AtLeastOnce,
        retain: false,
        expiry: None,
        scope: fulmar_core::broker::ForwardScope::Plain,
        stamp: 0,
    };
    for topic in ["t/+", "t/#", ""] {
        assert_eq!(
            c.sims[1].broker.forward_publish(from, &copy(1, topic), now),
            Err(ForwardError::Invalid),
            "{topic:?}"
        );
    }
    c.settle();
    assert!(c.sims[1].received(far).is_empty(), "nothing delivered");
    // A valid copy goes through the same way.
    let valid = copy(2, "t/a");
    assert_eq!(c.sims[1].broker.forward_publish(from, &valid, now), Ok(1));
}
