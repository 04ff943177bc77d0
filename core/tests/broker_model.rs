//! Model-based test of the broker: random histories of three to five MQTT 3.1.1 and 5.0
//! clients run against the real broker (through the virtual-time [`Sim`]) and against a
//! small reference model of the specification's delivery rules, packet by packet.
//!
//! The clients connect (clean or persistent; 5.0 with a Session Expiry Interval and maybe
//! a Receive Maximum; some with a will, 5.0 wills maybe delayed), reconnect while their
//! old connection is still open (takeover), subscribe and unsubscribe (`#`, `+`, exact
//! and `$share` filters; 5.0 options No Local, Retain As Published, Retain Handling and
//! Subscription Identifiers), publish at QoS 0, 1 and 2 (retained or not, an empty
//! retained payload clearing the topic), acknowledge what they received in order (PUBACK,
//! PUBREC, PUBREL, PUBCOMP), ping, disconnect (5.0: maybe with a new Session Expiry
//! Interval, or with reason 0x04 to have the will sent), lose their connection, and let
//! virtual time run (keep alive, will delay, session expiry). A client behaves as the
//! specification asks of one: after a crash it resumes its session and re-sends its
//! unacknowledged PUBLISH (DUP=1) and PUBREL ([MQTT-4.4.0-1]), and forgets its state when
//! Session Present is 0 ([MQTT-3.2.2-5] of 5.0). A history ends with every client back on
//! its session handling everything, so nothing the broker holds escapes the comparison.
//!
//! The model ([`World`]) is plain maps and vectors: sessions with their subscriptions, a
//! queue of deliveries (waiting, or in flight with their packet identifier), the QoS 2
//! identifiers received and not released, the will; the retained messages. It follows the
//! rules of §3.3 and §4 of both versions: a message goes to every session with a matching
//! subscription, one copy per session at the highest QoS of its matching subscriptions
//! (QoS = min(publish, subscription)); one member of each matching `$share` group gets a
//! copy; QoS 0 is not queued for an offline session; retained messages go out on subscribe
//! with RETAIN=1 and an empty retained payload deletes them; in-flight messages are sent
//! again with DUP=1 (PUBREL past PUBREC) when the session resumes; a clean start forgets;
//! a re-sent QoS 2 PUBLISH whose identifier awaits PUBREL is not delivered again; no more
//! QoS 1 and 2 PUBLISH are unacknowledged on a connection than the client's Receive
//! Maximum ([MQTT-3.3.4-9]), re-sends included.
//!
//! After every packet a client sends, each client's received packets must be what the
//! model predicts: every PUBLISH (topic, payload, QoS, RETAIN, DUP, subscription
//! identifiers, and the packet identifier of a re-send), every acknowledgment and its
//! reason code, CONNACK's Session Present, PINGRESP, DISCONNECT, and which connections the
//! broker still holds. Within one step packets are compared as a multiset; order is checked
//! where the specification fixes it: re-sent PUBLISH in their original order
//! ([MQTT-4.6.0-1]) and first sends of one publisher's messages on a topic at one QoS in
//! the order the broker received them (§4.6, ordered topics).
//!
//! Where the specification lets the broker choose, the model keeps every allowed outcome:
//! it is a set of possible worlds. The member of a `$share` group that gets a message is
//! any member (§4.8.2); connections whose keep alive ends at the same instant close in any
//! order; entries queued together (the retained messages for one subscription, the copies
//! of one message for one session) go out in any order, which matters once the Receive
//! Maximum holds some back. Each world predicts its packets; those that disagree with what
//! the broker did are dropped, and the test fails when none is left. Choices the broker
//! makes within the rules are taken as the model's own where the specification allows
//! them: QoS 0 messages stay in a session whose connection closed before they were sent
//! (5.0 §4.1 lets session state hold them), a PUBLISH waiting for the window holds back
//! those behind it, QoS 0 included (5.0 §4.9), and a QoS 2 message counts against the
//! window until PUBCOMP even when its PUBLISH went out on an earlier connection (the rule
//! is an upper bound).
#![cfg(feature = "alloc")]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use fulmar_core::broker::{Config, Growable};
use fulmar_core::codec::{
    Ack, Disconnect, List, Packet, PacketId, Properties, Property, ProtocolVersion, Publish, QoS,
    QoSPid, ReasonCode, RetainHandling, Subscribe, Subscription, SubscriptionOptions, Unsubscribe,
    Will,
};
use fulmar_core::sim::{ClientHandle, Received, Sim, connect_packet};
use fulmar_core::time::Duration;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestCaseError, TestRunner};

// --- The vocabulary of a history -------------------------------------------------------

const TOPICS: [&str; 4] = ["a", "a/b", "a/c", "b/c"];
const FILTERS: [&str; 7] = [
    "#",
    "a/#",
    "a/b",
    "+/c",
    "a/+",
    "$share/g/a/+",
    "$share/g/+/c",
];
const MAX_CLIENTS: usize = 5;
const MAX_WORLDS: usize = 2000;

fn is_shared(filter: usize) -> bool {
    FILTERS[filter].starts_with("$share/")
}

/// The filter without its `$share/{group}/` prefix.
fn plain_filter(filter: usize) -> &'static str {
    let f = FILTERS[filter];
    match f.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => f,
    }
}

/// §4.7: `+` is one level, `#` the parent level and everything below. None of the topics
/// here starts with `$`.
fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn qos(bits: u8) -> QoS {
    match bits {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// How a client connects.
#[derive(Debug, Clone)]
struct ConnectSpec {
    v5: bool,
    clean: bool,
    /// Session Expiry Interval (5.0 only).
    expiry: u32,
    /// Receive Maximum (5.0 only).
    receive_maximum: Option<u16>,
    keep_alive: u16,
    will: Option<WillSpec>,
}

#[derive(Debug, Clone, Copy)]
struct WillSpec {
    topic: usize,
    qos: u8,
    retain: bool,
    /// Will Delay Interval (5.0 only).
    delay: u32,
}

/// One step of a history. Client numbers are taken modulo the number of clients; an
/// operation of a client that is not connected does nothing.
#[derive(Debug, Clone)]
enum Op {
    /// Connects; a client still connected first loses its connection.
    Connect(usize, ConnectSpec),
    /// Connects while the old connection is still open (a half-open connection, a second
    /// device): the broker closes the old one ([MQTT-3.1.4-3]).
    Takeover(usize, ConnectSpec),
    Subscribe {
        client: usize,
        filter: usize,
        qos: u8,
        no_local: bool,
        retain_as_published: bool,
        retain_handling: u8,
        id: Option<u32>,
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
        /// With `retain`: an empty payload, which deletes the retained message.
        clear: bool,
    },
    /// The client handles this many of the packets it received, oldest first.
    Ack {
        client: usize,
        count: usize,
    },
    Ping(usize),
    /// DISCONNECT; for 5.0 optionally with a new Session Expiry Interval and with reason
    /// 0x04 Disconnect with Will Message.
    Disconnect {
        client: usize,
        expiry: Option<u32>,
        with_will: bool,
    },
    /// The network connection breaks: no DISCONNECT, and what was in flight to the client
    /// is lost.
    Drop(usize),
    Advance(u16),
}

#[derive(Debug, Clone)]
struct Case {
    clients: usize,
    /// How each client connects first, and what it subscribes to then.
    initial: Vec<(ConnectSpec, usize, u8)>,
    ops: Vec<Op>,
}

// --- The model -------------------------------------------------------------------------

/// A message as it travels: the publish, or one delivery of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Msg {
    topic: &'static str,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Sub {
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: RetainHandling,
    id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WillMsg {
    msg: Msg,
    delay: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Conn {
    v5: bool,
    /// The client's Receive Maximum (5.0; 3.1.1 gets the broker's `max_inflight`).
    receive_max: u16,
    keep_alive: u16,
    /// When the client last sent a packet (ms).
    last: u64,
}

/// Why a delivery exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Origin {
    /// Routed from a publish (or will) of `publisher`, the broker's `route`-th routing.
    Live {
        publisher: usize,
        route: u64,
        shared: bool,
        will: bool,
    },
    /// A retained message sent because of a new subscription.
    Retained,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    Queued,
    AwaitPubAck,
    AwaitPubRec,
    AwaitPubComp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Entry {
    id: u64,
    msg: Msg,
    /// Subscription identifiers (sent to 5.0 connections).
    ids: Vec<u32>,
    /// False once a 3.1.1 connection (which is not sent identifiers) could not tell this
    /// entry from one alike with other identifiers: either may hold this packet identifier.
    ids_known: bool,
    origin: Origin,
    state: State,
    /// Packet identifier, learned when the broker first sends the entry.
    pid: Option<u16>,
    /// Position among the first sends to this client, for the re-send order.
    sent: u64,
    /// In flight from an earlier connection: PUBLISH (or PUBREL) to send again.
    resend: bool,
    /// Entries queued together (one message's copies for a session, or the retained
    /// messages for a subscription) go out in an order the broker chooses.
    batch: u64,
    /// The broker's order put this entry ahead of the rest of its batch.
    pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Session {
    /// Session Expiry Interval, seconds.
    expiry: u32,
    conn: Option<Conn>,
    disconnected_at: u64,
    subs: BTreeMap<usize, Sub>,
    queue: Vec<Entry>,
    /// QoS 2 packet identifiers received from the client and not yet released.
    inbound: BTreeSet<u16>,
    will: Option<WillMsg>,
    will_due: Option<u64>,
}

impl Entry {
    /// The subscription identifiers a connection is sent ([MQTT-3.3.4-3]: 5.0 only).
    fn ids_for(&self, conn: &Conn) -> Option<Vec<u32>> {
        match (conn.v5, self.ids_known) {
            (false, _) => Some(Vec::new()),
            (true, true) => Some(self.ids.clone()),
            (true, false) => None,
        }
    }
}

/// A packet the model expects the broker to send to a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Out {
    ConnAck {
        present: bool,
    },
    Publish {
        entry: u64,
        msg: Msg,
        dup: bool,
        /// `None`: not known (see [`Entry::ids_known`]).
        ids: Option<Vec<u32>>,
        /// Known for a re-send.
        pid: Option<u16>,
        origin: Origin,
        /// For a re-send: its place among the first sends.
        sent: u64,
    },
    PubAck {
        pid: u16,
        codes: Vec<ReasonCode>,
    },
    PubRec {
        pid: u16,
        codes: Vec<ReasonCode>,
    },
    PubRel {
        pid: u16,
        code: ReasonCode,
    },
    PubComp {
        pid: u16,
        code: ReasonCode,
    },
    SubAck {
        pid: u16,
        code: ReasonCode,
    },
    UnsubAck {
        pid: u16,
        codes: Vec<ReasonCode>,
    },
    PingResp,
    Disconnect(ReasonCode),
}

/// What a client did, as the model sees it.
#[derive(Debug, Clone)]
enum Input {
    Connect {
        client: usize,
        takeover: bool,
        v5: bool,
        clean: bool,
        expiry: u32,
        receive_max: u16,
        keep_alive: u16,
        will: Option<WillMsg>,
    },
    Publish {
        client: usize,
        pid: Option<u16>,
        msg: Msg,
    },
    /// PUBREL for the client's own QoS 2 message.
    Release {
        client: usize,
        pid: u16,
    },
    PubAck {
        client: usize,
        pid: u16,
    },
    PubRec {
        client: usize,
        pid: u16,
    },
    PubComp {
        client: usize,
        pid: u16,
    },
    Subscribe {
        client: usize,
        pid: u16,
        filter: usize,
        sub: Sub,
    },
    Unsubscribe {
        client: usize,
        pid: u16,
        filter: usize,
    },
    Ping {
        client: usize,
    },
    Disconnect {
        client: usize,
        expiry: Option<u32>,
        with_will: bool,
    },
    Drop {
        client: usize,
    },
    Advance {
        ms: u64,
    },
}

/// What happened in a world, for the coverage report. Never part of a world's identity.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    delivered: u64,
    by_qos: [u64; 3],
    resent_publish: u64,
    resent_pubrel: u64,
    retained_on_subscribe: u64,
    shared: u64,
    wills: u64,
    keep_alive_closes: u64,
    expired: u64,
    resumed: u64,
    qos2_duplicates_ignored: u64,
    takeovers: u64,
    expiry_set_on_disconnect: u64,
    held_by_receive_maximum: u64,
}

impl PartialEq for Tally {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Tally {}

impl std::hash::Hash for Tally {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.delivered += o.delivered;
        for q in 0..3 {
            self.by_qos[q] += o.by_qos[q];
        }
        self.resent_publish += o.resent_publish;
        self.resent_pubrel += o.resent_pubrel;
        self.retained_on_subscribe += o.retained_on_subscribe;
        self.shared += o.shared;
        self.wills += o.wills;
        self.keep_alive_closes += o.keep_alive_closes;
        self.expired += o.expired;
        self.resumed += o.resumed;
        self.qos2_duplicates_ignored += o.qos2_duplicates_ignored;
        self.takeovers += o.takeovers;
        self.expiry_set_on_disconnect += o.expiry_set_on_disconnect;
        self.held_by_receive_maximum += o.held_by_receive_maximum;
    }
}

/// One possible state of the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct World {
    /// Virtual time, ms.
    now: u64,
    /// Sessions by client number.
    sessions: BTreeMap<usize, Session>,
    retained: BTreeMap<&'static str, (Vec<u8>, QoS)>,
    next_entry: u64,
    next_route: u64,
    next_sent: u64,
    /// Per (subscriber, publisher, topic, QoS): the routing of the last first send.
    last_route: BTreeMap<(usize, usize, &'static str, QoS), u64>,
    /// Packets predicted by the current step, per client.
    outbox: BTreeMap<usize, Vec<Out>>,
    tally: Tally,
}

const SUCCESS: ReasonCode = ReasonCode::Success;

impl World {
    fn session(&mut self, client: usize) -> &mut Session {
        self.sessions.get_mut(&client).expect("a session")
    }

    fn is_v5(&self, client: usize) -> bool {
        self.sessions
            .get(&client)
            .and_then(|s| s.conn.as_ref())
            .is_some_and(|c| c.v5)
    }

    fn out(&mut self, client: usize, out: Out) {
        self.outbox.entry(client).or_default().push(out);
    }

    /// The client sent a packet: its keep alive starts again ([MQTT-3.1.2-22]).
    fn touch(&mut self, client: usize) {
        let now = self.now;
        if let Some(conn) = self.session(client).conn.as_mut() {
            conn.last = now;
        }
    }

    fn apply(self, input: &Input) -> Vec<World> {
        self.apply_input(input)
            .into_iter()
            .flat_map(World::flush)
            .collect()
    }

    fn apply_input(mut self, input: &Input) -> Vec<World> {
        match input.clone() {
            Input::Connect {
                client,
                takeover,
                v5,
                clean,
                expiry,
                receive_max,
                keep_alive,
                will,
            } => {
                let mut worlds = vec![self];
                if takeover {
                    // [MQTT-3.1.4-3]: the old connection is closed, a 5.0 one with 0x8E
                    // first; it ends without DISCONNECT, so its will goes out (3.1.1
                    // [MQTT-3.1.2-8]; 5.0 §3.1.4).
                    worlds = worlds
                        .into_iter()
                        .flat_map(|mut w| {
                            w.tally.takeovers += 1;
                            if w.is_v5(client) {
                                w.out(client, Out::Disconnect(ReasonCode::SessionTakenOver));
                            }
                            w.detach(client, true)
                        })
                        .collect();
                }
                for w in &mut worlds {
                    let conn = Conn {
                        v5,
                        receive_max,
                        keep_alive,
                        last: w.now,
                    };
                    w.connect(client, conn, clean, expiry, will.clone());
                }
                worlds
            }
            Input::Publish { client, pid, msg } => {
                self.touch(client);
                self.publish(client, pid, msg)
            }
            Input::Release { client, pid } => {
                self.touch(client);
                let found = self.session(client).inbound.remove(&pid);
                let code = if found || !self.is_v5(client) {
                    SUCCESS
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.out(client, Out::PubComp { pid, code });
                vec![self]
            }
            Input::PubAck { client, pid } => {
                self.touch(client);
                self.session(client)
                    .queue
                    .retain(|e| !(e.state == State::AwaitPubAck && e.pid == Some(pid)));
                vec![self]
            }
            Input::PubRec { client, pid } => {
                self.touch(client);
                let v5 = self.is_v5(client);
                let entry = self.session(client).queue.iter_mut().find(|e| {
                    e.pid == Some(pid)
                        && matches!(e.state, State::AwaitPubRec | State::AwaitPubComp)
                });
                let code = match entry {
                    Some(e) => {
                        e.state = State::AwaitPubComp;
                        SUCCESS
                    }
                    None if v5 => ReasonCode::PacketIdentifierNotFound,
                    None => SUCCESS,
                };
                self.out(client, Out::PubRel { pid, code });
                vec![self]
            }
            Input::PubComp { client, pid } => {
                self.touch(client);
                self.session(client)
                    .queue
                    .retain(|e| !(e.state == State::AwaitPubComp && e.pid == Some(pid)));
                vec![self]
            }
            Input::Subscribe {
                client,
                pid,
                filter,
                sub,
            } => {
                self.touch(client);
                self.subscribe(client, pid, filter, sub);
                vec![self]
            }
            Input::Unsubscribe {
                client,
                pid,
                filter,
            } => {
                self.touch(client);
                let existed = self.session(client).subs.remove(&filter).is_some();
                let codes = match (self.is_v5(client), existed) {
                    (false, _) => vec![],
                    (true, true) => vec![SUCCESS],
                    (true, false) => vec![ReasonCode::NoSubscriptionExisted],
                };
                self.out(client, Out::UnsubAck { pid, codes });
                vec![self]
            }
            Input::Ping { client } => {
                self.touch(client);
                self.out(client, Out::PingResp);
                vec![self]
            }
            Input::Disconnect {
                client,
                expiry,
                with_will,
            } => {
                let s = self.session(client);
                if let Some(expiry) = expiry {
                    // [MQTT-3.14.2-2]: a session that was to end with the connection cannot
                    // be kept by DISCONNECT; the broker closes with 0x82.
                    if s.expiry == 0 && expiry != 0 {
                        self.out(client, Out::Disconnect(ReasonCode::ProtocolError));
                        return self.detach(client, true);
                    }
                    s.expiry = expiry.min(config().max_session_expiry);
                    self.tally.expiry_set_on_disconnect += 1;
                }
                // [MQTT-3.14.4-3]: 0x00 deletes the will, 0x04 asks for it.
                self.detach(client, with_will)
            }
            Input::Drop { client } => self.detach(client, true),
            Input::Advance { ms } => {
                let target = self.now + ms;
                self.advance(target)
            }
        }
    }

    fn connect(
        &mut self,
        client: usize,
        conn: Conn,
        clean: bool,
        expiry: u32,
        will: Option<WillMsg>,
    ) {
        // [MQTT-3.1.2-8] (5.0): a new connection for the client identifier before the
        // will delay has passed means the will is not published.
        if let Some(s) = self.sessions.get_mut(&client) {
            s.will = None;
            s.will_due = None;
        }
        // [MQTT-3.1.2-4], [MQTT-3.2.2-2], [MQTT-3.2.2-3]: Clean Start discards the session;
        // otherwise an existing one resumes.
        let present = !clean && self.sessions.contains_key(&client);
        if !present {
            self.sessions.insert(client, Session::default());
        } else {
            self.tally.resumed += 1;
        }
        let max = config().max_session_expiry;
        let s = self.session(client);
        s.expiry = match (conn.v5, clean) {
            (true, _) => expiry.min(max),
            (false, true) => 0,
            (false, false) => max,
        };
        s.conn = Some(conn);
        s.will = will;
        // [MQTT-4.4.0-1]: unacknowledged PUBLISH go again with DUP=1 and the same packet
        // identifier, PUBREL for those past PUBREC.
        for e in &mut s.queue {
            e.resend = e.state != State::Queued;
        }
        self.out(client, Out::ConnAck { present });
    }

    /// Sends what an online session has due, within the client's Receive Maximum
    /// ([MQTT-3.3.4-9]: no more QoS 1 and 2 PUBLISH unacknowledged than that; a QoS 2
    /// message counts until PUBCOMP). Re-sends go first, in their original order
    /// ([MQTT-4.6.0-1]), then queued messages in order; once a PUBLISH must wait, the ones
    /// behind it wait too (QoS 0 may, 5.0 §4.9), PUBREL never does ([MQTT-3.3.4-10]).
    /// Returns a world for each order the broker may have given entries queued together.
    fn transmit(mut self, client: usize) -> Vec<World> {
        let Some(conn) = self.sessions[&client].conn.clone() else {
            return vec![self];
        };
        let s = self.session(client);
        let awaiting_resend =
            |e: &Entry| e.resend && matches!(e.state, State::AwaitPubAck | State::AwaitPubRec);
        let mut on_wire = s
            .queue
            .iter()
            .filter(|e| e.state != State::Queued && !awaiting_resend(e))
            .count();
        let mut order: Vec<usize> = (0..s.queue.len()).filter(|&i| s.queue[i].resend).collect();
        order.sort_by_key(|&i| s.queue[i].sent);
        let mut blocked = false;
        let mut outs = Vec::new();
        for i in order {
            let e = &mut s.queue[i];
            if e.state == State::AwaitPubComp {
                outs.push(Out::PubRel {
                    pid: e.pid.expect("in flight"),
                    code: SUCCESS,
                });
            } else if blocked || on_wire >= usize::from(conn.receive_max) {
                blocked = true;
                continue;
            } else {
                on_wire += 1;
                outs.push(Out::Publish {
                    entry: e.id,
                    msg: e.msg.clone(),
                    dup: true,
                    ids: e.ids_for(&conn),
                    pid: e.pid,
                    origin: e.origin,
                    sent: e.sent,
                });
            }
            e.resend = false;
        }
        for out in outs {
            match out {
                Out::Publish { .. } => self.tally.resent_publish += 1,
                _ => self.tally.resent_pubrel += 1,
            }
            self.out(client, out);
        }
        if blocked {
            self.tally.held_by_receive_maximum += 1;
            return vec![self];
        }
        self.send_queued(client, &conn, on_wire)
    }

    /// Sends queued entries, batch by batch, while the window allows.
    fn send_queued(mut self, client: usize, conn: &Conn, on_wire: usize) -> Vec<World> {
        let queue = &self.sessions[&client].queue;
        let Some(first) = queue.iter().position(|e| e.state == State::Queued) else {
            return vec![self];
        };
        let head = &queue[first];
        let members: Vec<usize> = if head.pinned {
            vec![first]
        } else {
            (first..queue.len())
                .take_while(|&i| queue[i].batch == head.batch && !queue[i].pinned)
                .collect()
        };
        let need = members
            .iter()
            .filter(|&&i| queue[i].msg.qos > QoS::AtMostOnce)
            .count();
        let room = usize::from(conn.receive_max).saturating_sub(on_wire);
        if need <= room {
            // All of it goes out: the order within the batch is not observable.
            let ids: Vec<u64> = members.iter().map(|&i| queue[i].id).collect();
            for id in ids {
                self.send_fresh(client, conn, id);
            }
            return self.send_queued(client, conn, on_wire + need);
        }
        if members.len() == 1 {
            // A QoS 1 or 2 PUBLISH without room: it and everything behind it wait.
            self.tally.held_by_receive_maximum += 1;
            return vec![self];
        }
        // The window closes inside the batch: which entry the broker queued first
        // decides what goes out. Try each (entries alike need one try).
        let mut worlds = Vec::new();
        let mut tried: Vec<(Msg, Vec<u32>, Origin)> = Vec::new();
        for &i in &members {
            let e = &queue[i];
            let key = (e.msg.clone(), e.ids.clone(), e.origin);
            if tried.contains(&key) {
                continue;
            }
            tried.push(key);
            let mut w = self.clone();
            let q = &mut w.session(client).queue;
            let mut e = q.remove(i);
            e.pinned = true;
            q.insert(first, e);
            worlds.extend(w.send_queued(client, conn, on_wire));
        }
        worlds
    }

    /// Sends queued entry `id` for the first time.
    fn send_fresh(&mut self, client: usize, conn: &Conn, id: u64) {
        let s = self.session(client);
        let i = s.queue.iter().position(|e| e.id == id).expect("queued");
        let e = &mut s.queue[i];
        let out = Out::Publish {
            entry: e.id,
            msg: e.msg.clone(),
            dup: false,
            ids: e.ids_for(conn),
            pid: None,
            origin: e.origin,
            sent: 0,
        };
        match e.msg.qos {
            // QoS 0 is done once sent.
            QoS::AtMostOnce => {
                s.queue.remove(i);
            }
            QoS::AtLeastOnce => e.state = State::AwaitPubAck,
            QoS::ExactlyOnce => e.state = State::AwaitPubRec,
        }
        self.out(client, out);
    }

    /// Queues a delivery; returns whether the session takes it (an offline session takes no
    /// QoS 0: a broker need not keep them, and this one does not by default).
    fn enqueue(
        &mut self,
        client: usize,
        msg: Msg,
        ids: Vec<u32>,
        origin: Origin,
        batch: u64,
    ) -> bool {
        self.next_entry += 1;
        let id = self.next_entry;
        let s = self.session(client);
        if s.conn.is_none() && msg.qos == QoS::AtMostOnce {
            return false;
        }
        s.queue.push(Entry {
            id,
            msg,
            ids,
            origin,
            state: State::Queued,
            pid: None,
            sent: 0,
            resend: false,
            batch,
            pinned: false,
            ids_known: true,
        });
        true
    }

    /// What the host does after each input: every online session sends what is queued.
    /// A connection the broker closed within the same input sent nothing more, and its
    /// session keeps the messages, QoS 0 too (5.0 §4.1: session state may hold QoS 0
    /// messages pending transmission).
    fn flush(self) -> Vec<World> {
        let online: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(c, _)| *c)
            .collect();
        let mut worlds = vec![self];
        for client in online {
            worlds = worlds
                .into_iter()
                .flat_map(|w| w.transmit(client))
                .collect();
        }
        worlds
    }

    /// Routes a message to every matching subscription; returns each possible outcome with
    /// the number of sessions that took the message.
    fn route(mut self, msg: &Msg, publisher: usize, will: bool) -> Vec<(World, usize)> {
        self.next_route += 1;
        let route = self.next_route;
        // [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7] (3.1.1: -10, -11): keep the last
        // retained message per topic; an empty payload deletes it.
        if msg.retain {
            if msg.payload.is_empty() {
                self.retained.remove(msg.topic);
            } else {
                self.retained
                    .insert(msg.topic, (msg.payload.clone(), msg.qos));
            }
        }
        let mut taken = 0;
        let clients: Vec<usize> = self.sessions.keys().copied().collect();
        for client in clients {
            // [MQTT-3.3.4-2] (5.0) / 3.1.1 §3.3.5: overlapping subscriptions give one copy at
            // the highest QoS. [MQTT-3.8.3-3]: No Local skips the publisher's own.
            let matching: Vec<Sub> = self.sessions[&client]
                .subs
                .iter()
                .filter(|(f, sub)| {
                    !is_shared(**f)
                        && matches(FILTERS[**f], msg.topic)
                        && !(sub.no_local && client == publisher)
                })
                .map(|(_, sub)| sub.clone())
                .collect();
            let Some(max) = matching.iter().map(|s| s.qos).max() else {
                continue;
            };
            // [MQTT-3.3.1-12], [MQTT-3.3.1-13] (3.1.1: [MQTT-3.3.1-9]): RETAIN is kept only
            // for Retain As Published.
            let retain = msg.retain && matching.iter().any(|s| s.retain_as_published);
            let mut ids: Vec<u32> = matching.iter().filter_map(|s| s.id).collect();
            ids.sort_unstable();
            let delivery = Msg {
                topic: msg.topic,
                payload: msg.payload.clone(),
                qos: msg.qos.min(max),
                retain,
            };
            let origin = Origin::Live {
                publisher,
                route,
                shared: false,
                will,
            };
            if self.enqueue(client, delivery, ids, origin, route) {
                taken += 1;
            }
        }
        // §4.8.2: one member of each matching shared subscription gets a copy: any member.
        let mut worlds = vec![(self, taken)];
        for filter in (0..FILTERS.len()).filter(|&f| is_shared(f)) {
            if !matches(plain_filter(filter), msg.topic) {
                continue;
            }
            let mut next = Vec::new();
            for (world, taken) in worlds {
                let members: Vec<(usize, Sub)> = world
                    .sessions
                    .iter()
                    .filter_map(|(c, s)| s.subs.get(&filter).map(|sub| (*c, sub.clone())))
                    .collect();
                if members.is_empty() {
                    next.push((world, taken));
                    continue;
                }
                for (member, sub) in members {
                    let mut w = world.clone();
                    let delivery = Msg {
                        topic: msg.topic,
                        payload: msg.payload.clone(),
                        qos: msg.qos.min(sub.qos),
                        retain: msg.retain && sub.retain_as_published,
                    };
                    let origin = Origin::Live {
                        publisher,
                        route,
                        shared: true,
                        will,
                    };
                    let ids = sub.id.into_iter().collect();
                    let took = w.enqueue(member, delivery, ids, origin, route);
                    next.push((w, taken + usize::from(took)));
                }
            }
            worlds = next;
        }
        worlds
    }

    fn publish(mut self, client: usize, pid: Option<u16>, msg: Msg) -> Vec<World> {
        let v5 = self.is_v5(client);
        // 5.0 §3.4.2.1: 0x10 No matching subscribers is allowed only when nobody took it.
        let codes = move |taken: usize| {
            if v5 && taken == 0 {
                vec![SUCCESS, ReasonCode::NoMatchingSubscribers]
            } else {
                vec![SUCCESS]
            }
        };
        match (msg.qos, pid) {
            (QoS::ExactlyOnce, Some(pid)) => {
                // §4.3.3: a PUBLISH whose identifier awaits PUBREL is a re-send: PUBREC
                // again, no second delivery.
                if self.sessions[&client].inbound.contains(&pid) {
                    self.tally.qos2_duplicates_ignored += 1;
                    self.out(
                        client,
                        Out::PubRec {
                            pid,
                            codes: vec![SUCCESS],
                        },
                    );
                    return vec![self];
                }
                self.route(&msg, client, false)
                    .into_iter()
                    .map(|(mut w, taken)| {
                        w.session(client).inbound.insert(pid);
                        w.out(
                            client,
                            Out::PubRec {
                                pid,
                                codes: codes(taken),
                            },
                        );
                        w
                    })
                    .collect()
            }
            (QoS::AtLeastOnce, Some(pid)) => self
                .route(&msg, client, false)
                .into_iter()
                .map(|(mut w, taken)| {
                    w.out(
                        client,
                        Out::PubAck {
                            pid,
                            codes: codes(taken),
                        },
                    );
                    w
                })
                .collect(),
            _ => self
                .route(&msg, client, false)
                .into_iter()
                .map(|(w, _)| w)
                .collect(),
        }
    }

    fn subscribe(&mut self, client: usize, pid: u16, filter: usize, sub: Sub) {
        let existed = self
            .session(client)
            .subs
            .insert(filter, sub.clone())
            .is_some();
        let code = match sub.qos {
            QoS::AtMostOnce => SUCCESS,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        };
        self.out(client, Out::SubAck { pid, code });
        // [MQTT-3.8.4-3] (3.1.1) / §3.8.4 and Retain Handling (5.0): retained messages go
        // out on every subscribe (handling 0) or only a new one (1), never to a shared
        // subscription, with RETAIN=1 ([MQTT-3.3.1-8] / [MQTT-3.3.1-9] of 5.0).
        let send = !is_shared(filter)
            && match sub.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if !send {
            return;
        }
        let retained: Vec<(&'static str, Vec<u8>, QoS)> = self
            .retained
            .iter()
            .filter(|(topic, _)| matches(FILTERS[filter], topic))
            .map(|(topic, (payload, q))| (*topic, payload.clone(), *q))
            .collect();
        self.next_route += 1;
        let batch = self.next_route;
        for (topic, payload, q) in retained {
            let msg = Msg {
                topic,
                payload,
                qos: q.min(sub.qos),
                retain: true,
            };
            let ids = sub.id.into_iter().collect();
            self.enqueue(client, msg, ids, Origin::Retained, batch);
        }
    }

    /// The connection ends: abnormally (no DISCONNECT, or closed by the broker) publishes
    /// the will, now or after its delay; a session with expiry 0 ends.
    fn detach(mut self, client: usize, abnormal: bool) -> Vec<World> {
        let now = self.now;
        let s = self.session(client);
        s.conn = None;
        s.disconnected_at = now;
        let expiry = s.expiry;
        let mut worlds = vec![self];
        let s = worlds[0].session(client);
        match s.will.clone() {
            // §3.1.3.2.2 (5.0): the will waits for its delay or the end of the session,
            // whichever is first.
            Some(will) if abnormal => {
                let delay = will.delay.min(expiry);
                if delay == 0 {
                    worlds = worlds.remove(0).publish_will(client);
                } else {
                    s.will_due = Some(now + u64::from(delay) * 1000);
                }
            }
            // [MQTT-3.1.2-10] (3.1.1) / [MQTT-3.14.4-3]: DISCONNECT deletes the will.
            _ => s.will = None,
        }
        if expiry == 0 {
            worlds = worlds
                .into_iter()
                .flat_map(|w| w.end_session(client))
                .collect();
        }
        worlds
    }

    fn publish_will(mut self, client: usize) -> Vec<World> {
        let s = self.session(client);
        s.will_due = None;
        let Some(will) = s.will.take() else {
            return vec![self];
        };
        self.tally.wills += 1;
        self.route(&will.msg, client, true)
            .into_iter()
            .map(|(w, _)| w)
            .collect()
    }

    fn end_session(self, client: usize) -> Vec<World> {
        let pending_will = self.sessions[&client].will_due.is_some();
        let worlds = if pending_will {
            self.publish_will(client)
        } else {
            vec![self]
        };
        worlds
            .into_iter()
            .map(|mut w| {
                w.sessions.remove(&client);
                w
            })
            .collect()
    }

    fn keep_alive_deadline(conn: &Conn) -> Option<u64> {
        (conn.keep_alive > 0).then(|| conn.last + u64::from(conn.keep_alive) * 1500)
    }

    fn expiry_deadline(s: &Session) -> Option<u64> {
        s.conn
            .is_none()
            .then(|| s.disconnected_at + u64::from(s.expiry) * 1000)
    }

    fn next_deadline(&self) -> Option<u64> {
        self.sessions
            .values()
            .flat_map(|s| {
                [
                    s.conn.as_ref().and_then(Self::keep_alive_deadline),
                    s.will_due,
                    Self::expiry_deadline(s),
                ]
            })
            .flatten()
            .min()
    }

    /// Time runs to `target`, acting on each deadline on the way: keep alive
    /// ([MQTT-3.1.2-22]: 1.5 times the interval without a packet), will delay, session
    /// expiry.
    fn advance(self, target: u64) -> Vec<World> {
        let mut todo = vec![self];
        let mut done = Vec::new();
        while let Some(mut world) = todo.pop() {
            let Some(at) = world.next_deadline().filter(|&at| at <= target) else {
                world.now = target;
                push_unique(&mut done, world);
                continue;
            };
            world.now = at;
            let closing: Vec<usize> = world
                .sessions
                .iter()
                .filter(|(_, s)| {
                    s.conn
                        .as_ref()
                        .and_then(Self::keep_alive_deadline)
                        .is_some_and(|d| d <= at)
                })
                .map(|(c, _)| *c)
                .collect();
            // Connections timing out together close in any order.
            for order in permutations(&closing) {
                let mut worlds = vec![world.clone()];
                for &client in &order {
                    worlds = worlds
                        .into_iter()
                        .flat_map(|mut w| {
                            w.tally.keep_alive_closes += 1;
                            if w.is_v5(client) {
                                w.out(client, Out::Disconnect(ReasonCode::KeepAliveTimeout));
                            }
                            w.detach(client, true)
                        })
                        .collect();
                }
                // Session timers only touch offline sessions, so their order is not
                // observable.
                for w in worlds {
                    for w in w.session_timers(at).into_iter().flat_map(World::flush) {
                        push_unique(&mut todo, w);
                    }
                }
            }
        }
        done
    }

    fn session_timers(self, at: u64) -> Vec<World> {
        let clients: Vec<usize> = self.sessions.keys().copied().collect();
        let mut worlds = vec![self];
        for client in clients {
            let mut next = Vec::new();
            for w in worlds {
                let Some(s) = w.sessions.get(&client) else {
                    next.push(w);
                    continue;
                };
                let will_due = s.will_due.is_some_and(|d| d <= at);
                let ws = if will_due {
                    w.publish_will(client)
                } else {
                    vec![w]
                };
                for mut w in ws {
                    if w.sessions
                        .get(&client)
                        .and_then(Self::expiry_deadline)
                        .is_some_and(|d| d <= at)
                    {
                        w.tally.expired += 1;
                        next.extend(w.end_session(client));
                    } else {
                        next.push(w);
                    }
                }
            }
            worlds = next;
        }
        worlds
    }

    /// Checks this world's predicted packets against what each client received, learning
    /// the packet identifiers the broker chose. `connected[c]` is whether the broker holds
    /// client `c`'s connection, `None` for a client without one.
    fn reconcile(
        &mut self,
        received: &[Vec<Received>],
        connected: &[Option<bool>],
    ) -> Result<(), String> {
        for (client, held) in connected.iter().enumerate() {
            let online = self.sessions.get(&client).is_some_and(|s| s.conn.is_some());
            if held.unwrap_or(false) != online {
                return Err(format!(
                    "client {client}: broker holds its connection: {held:?}, model: {online}"
                ));
            }
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        for (client, got) in received.iter().enumerate() {
            let mut expected: Vec<Option<Out>> = outbox
                .remove(&client)
                .unwrap_or_default()
                .into_iter()
                .map(Some)
                .collect();
            let mut last_resent = 0;
            for packet in got {
                // Predictions alike are interchangeable: the first in queue order is taken.
                let fitting: Vec<usize> = (0..expected.len())
                    .filter(|&i| expected[i].as_ref().is_some_and(|e| fits(e, packet)))
                    .collect();
                let Some(&i) = fitting.first() else {
                    let left: Vec<&Out> = expected.iter().flatten().collect();
                    return Err(format!(
                        "client {client} got {packet:?}, the model expects only {left:?}"
                    ));
                };
                self.forget_ids_if_ambiguous(client, &expected, &fitting);
                let out = expected[i].take().expect("matched");
                self.account(client, &out, packet, &mut last_resent)?;
            }
            let missing: Vec<Out> = expected.into_iter().flatten().collect();
            if !missing.is_empty() {
                return Err(format!(
                    "client {client} did not get {missing:?} (got {got:?})"
                ));
            }
        }
        Ok(())
    }

    /// Entries that fit the same packet but differ in subscription identifiers (hidden
    /// from a 3.1.1 connection) cannot be told apart by their packet identifiers any more:
    /// their identifiers become unknown rather than the model guessing.
    fn forget_ids_if_ambiguous(
        &mut self,
        client: usize,
        expected: &[Option<Out>],
        fitting: &[usize],
    ) {
        let entries: Vec<u64> = fitting
            .iter()
            .filter_map(|&i| match &expected[i] {
                Some(Out::Publish { entry, .. }) => Some(*entry),
                _ => None,
            })
            .collect();
        let Some(s) = self.sessions.get_mut(&client) else {
            return;
        };
        let ids: Vec<&Vec<u32>> = s
            .queue
            .iter()
            .filter(|e| entries.contains(&e.id))
            .map(|e| &e.ids)
            .collect();
        if ids.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        for e in s.queue.iter_mut().filter(|e| entries.contains(&e.id)) {
            e.ids_known = false;
        }
    }

    /// Learns what a matched packet tells and checks the ordering rules.
    fn account(
        &mut self,
        client: usize,
        out: &Out,
        packet: &Received,
        last_resent: &mut u64,
    ) -> Result<(), String> {
        match (out, packet) {
            (
                Out::Publish {
                    entry,
                    msg,
                    dup: false,
                    origin,
                    ..
                },
                Received::Publish { packet_id, .. },
            ) => {
                self.tally.delivered += 1;
                self.tally.by_qos[msg.qos as usize] += 1;
                match origin {
                    Origin::Retained => self.tally.retained_on_subscribe += 1,
                    Origin::Live {
                        publisher,
                        route,
                        shared,
                        ..
                    } => {
                        self.tally.shared += u64::from(*shared);
                        // §4.6: one publisher's messages on a topic at one QoS go out in
                        // the order the broker received them.
                        let key = (client, *publisher, msg.topic, msg.qos);
                        let last = self.last_route.entry(key).or_insert(0);
                        if *route < *last {
                            return Err(format!(
                                "client {client}: {msg:?} (routing {route}) after routing {last} of \
                                 client {publisher} on the same topic and QoS"
                            ));
                        }
                        *last = *route;
                    }
                }
                self.next_sent += 1;
                let sent = self.next_sent;
                // The session may have ended later in the same step (a keep alive timeout
                // after a will went out, say): then there is nothing to learn.
                if let (Some(pid), Some(s)) = (packet_id, self.sessions.get_mut(&client)) {
                    let pid = pid.get();
                    // [MQTT-2.2.1-3]: unused by any other message in flight.
                    if s.queue
                        .iter()
                        .any(|e| e.pid == Some(pid) && e.state != State::Queued)
                    {
                        return Err(format!(
                            "client {client}: packet identifier {pid} already in use"
                        ));
                    }
                    if let Some(e) = s.queue.iter_mut().find(|e| e.id == *entry) {
                        e.pid = Some(pid);
                        e.sent = sent;
                    }
                }
            }
            (Out::Publish { sent, msg, .. }, _) => {
                // [MQTT-4.6.0-1]: re-sent in the order of the first sends.
                if *sent <= *last_resent {
                    return Err(format!("client {client}: {msg:?} re-sent out of order"));
                }
                *last_resent = *sent;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether the broker's `packet` is the predicted `out`.
fn fits(out: &Out, packet: &Received) -> bool {
    let pid_is = |id: &PacketId, pid: &u16| id.get() == *pid;
    match (out, packet) {
        (
            Out::ConnAck { present },
            Received::ConnAck {
                session_present,
                code,
                ..
            },
        ) => *code == SUCCESS && session_present == present,
        (
            Out::Publish {
                msg, dup, ids, pid, ..
            },
            Received::Publish {
                topic,
                payload,
                qos,
                packet_id,
                retain,
                dup: got_dup,
                subscription_ids,
                ..
            },
        ) => {
            let mut got_ids = subscription_ids.clone();
            got_ids.sort_unstable();
            let ids_fit = ids.as_ref().is_none_or(|ids| got_ids == *ids);
            topic == msg.topic
                && *payload == msg.payload
                && *qos == msg.qos
                && *retain == msg.retain
                && got_dup == dup
                && ids_fit
                && (*qos == QoS::AtMostOnce) == packet_id.is_none()
                && pid.is_none_or(|p| packet_id.is_some_and(|id| id.get() == p))
        }
        (Out::PubAck { pid, codes }, Received::PubAck(id, code))
        | (Out::PubRec { pid, codes }, Received::PubRec(id, code)) => {
            pid_is(id, pid) && codes.contains(code)
        }
        (Out::PubRel { pid, code }, Received::PubRel(id, c))
        | (Out::PubComp { pid, code }, Received::PubComp(id, c)) => pid_is(id, pid) && c == code,
        (Out::SubAck { pid, code }, Received::SubAck(id, c)) => {
            pid_is(id, pid) && c.as_slice() == [*code]
        }
        (Out::UnsubAck { pid, codes }, Received::UnsubAck(id, c)) => pid_is(id, pid) && c == codes,
        (Out::PingResp, Received::PingResp) => true,
        (Out::Disconnect(code), Received::Disconnect(c)) => c == code,
        _ => false,
    }
}

/// Distinct worlds, in the order found.
#[derive(Default)]
struct Worlds {
    list: Vec<World>,
    by_hash: HashMap<u64, Vec<usize>>,
}

impl Worlds {
    fn push(&mut self, world: World) {
        let mut hasher = std::hash::DefaultHasher::new();
        world.hash(&mut hasher);
        let same = self.by_hash.entry(hasher.finish()).or_default();
        if !same.iter().any(|&i| self.list[i] == world) {
            same.push(self.list.len());
            self.list.push(world);
        }
    }

    fn len(&self) -> usize {
        self.list.len()
    }
}

fn push_unique(worlds: &mut Vec<World>, world: World) {
    if !worlds.contains(&world) {
        worlds.push(world);
    }
}

fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            all.push(p);
        }
    }
    all
}

// --- The clients and the run ---------------------------------------------------------

fn config() -> Config {
    Config {
        // 3.1.1 has no Receive Maximum; the broker's own window for those clients is
        // small, so it closes often.
        max_inflight: 3,
        ..Config::default()
    }
}

/// A client's own QoS 1 or 2 message not yet acknowledged.
#[derive(Debug, Clone)]
struct Outbound {
    pid: u16,
    msg: Msg,
    /// PUBREC came and PUBREL went: waiting for PUBCOMP.
    released: bool,
}

#[derive(Debug)]
struct Client {
    id: String,
    handle: Option<ClientHandle>,
    v5: bool,
    /// Packets received and not yet handled, oldest first.
    pending: VecDeque<Received>,
    outbound: Vec<Outbound>,
    next_pid: u16,
    /// Session Present of the last CONNACK.
    session_present: bool,
}

impl Client {
    /// A packet identifier unused by the client's messages in flight ([MQTT-2.2.1-3]).
    fn pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            if !self.outbound.iter().any(|o| o.pid == self.next_pid) {
                return self.next_pid;
            }
        }
    }
}

fn pid(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero")
}

/// Totals over all cases.
#[derive(Debug, Default)]
struct Coverage {
    cases: u64,
    /// Cases cut short with too many possible worlds.
    inconclusive: u64,
    cases_with_deliveries: u64,
    steps: u64,
    max_worlds: usize,
    tally: Tally,
}

struct Runner {
    sim: Sim<Growable>,
    clients: Vec<Client>,
    worlds: Vec<World>,
    next_msg: u32,
    max_worlds: usize,
    steps: u64,
    /// Connections taken over, with the client they belonged to: the next step collects
    /// what they received and checks that the broker closed them.
    retired: Vec<(usize, ClientHandle)>,
    /// Stopped because too many worlds were possible (not a failure).
    inconclusive: bool,
    /// What happened so far, for the failure message.
    log: Vec<String>,
}

impl Runner {
    fn new(clients: usize) -> Self {
        Self {
            sim: Sim::new(config()),
            clients: (0..clients)
                .map(|i| Client {
                    id: format!("c{i}"),
                    handle: None,
                    v5: false,
                    pending: VecDeque::new(),
                    outbound: Vec::new(),
                    next_pid: 0,
                    session_present: false,
                })
                .collect(),
            worlds: vec![World::default()],
            next_msg: 0,
            max_worlds: 1,
            steps: 0,
            retired: Vec::new(),
            inconclusive: false,
            log: Vec::new(),
        }
    }

    fn payload(&mut self, prefix: char) -> Vec<u8> {
        self.next_msg += 1;
        format!("{prefix}{}", self.next_msg).into_bytes()
    }

    /// Sends a packet from a connected client.
    fn send(&mut self, client: usize, packet: &Packet<'_>) {
        let handle = self.clients[client].handle.expect("connected");
        self.sim.send(handle, packet);
    }

    /// After the broker took an input: compares what every client received with each
    /// world, keeps the worlds that agree, and files the packets with their clients.
    fn step(&mut self, input: Input) -> Result<(), String> {
        self.steps += 1;
        self.log.push(format!("{input:?}"));
        let mut received: Vec<Vec<Received>> = vec![Vec::new(); self.clients.len()];
        for (c, h) in std::mem::take(&mut self.retired) {
            if self.sim.is_connected(h) {
                return Err(format!(
                    "client {c}: the connection taken over is still open"
                ));
            }
            received[c].extend(self.sim.received(h));
        }
        for (c, client) in self.clients.iter().enumerate() {
            if let Some(h) = client.handle {
                received[c].extend(self.sim.received(h));
            }
        }
        let connected: Vec<Option<bool>> = self
            .clients
            .iter()
            .map(|c| c.handle.map(|h| self.sim.is_connected(h)))
            .collect();
        let mut kept = Worlds::default();
        let mut errors = Vec::new();
        for world in std::mem::take(&mut self.worlds) {
            for mut next in world.apply(&input) {
                match next.reconcile(&received, &connected) {
                    Ok(()) => kept.push(next),
                    Err(e) => errors.push(e),
                }
                // Too many choices of the broker are still unobserved (copies for `$share`
                // members that are offline or held by their window, say): the history
                // is cut short here rather than run slowly.
                if kept.len() > MAX_WORLDS {
                    self.inconclusive = true;
                    return Err(format!("{} possible worlds", kept.len()));
                }
            }
        }
        if kept.len() == 0 {
            errors.truncate(4);
            return Err(format!(
                "after {} steps the broker and the model disagree.\nsteps:\n  {}\n\
                 received: {received:?}\nworlds ruled out:\n  {}",
                self.log.len(),
                self.log.join("\n  "),
                errors.join("\n  ")
            ));
        }
        self.max_worlds = self.max_worlds.max(kept.len());
        self.worlds = kept.list;
        for (c, got) in received.into_iter().enumerate() {
            let client = &mut self.clients[c];
            for packet in got {
                if let Received::ConnAck {
                    session_present, ..
                } = packet
                {
                    client.session_present = session_present;
                }
                if matches!(
                    packet,
                    Received::Publish { .. }
                        | Received::PubAck(..)
                        | Received::PubRec(..)
                        | Received::PubRel(..)
                        | Received::PubComp(..)
                ) {
                    client.pending.push_back(packet);
                }
            }
            if connected[c] == Some(false) {
                // The broker closed it; whatever the client had not handled is lost.
                client.handle = None;
                client.pending.clear();
            }
        }
        Ok(())
    }

    fn connect(&mut self, client: usize, spec: &ConnectSpec, takeover: bool) -> Result<(), String> {
        let takeover = takeover && self.clients[client].handle.is_some();
        if let Some(h) = self.clients[client].handle.take() {
            self.clients[client].pending.clear();
            if takeover {
                // The old connection stays open until the broker closes it.
                self.retired.push((client, h));
            } else {
                self.sim.drop_connection(h);
                self.step(Input::Drop { client })?;
            }
        }
        let will = spec.will.map(|w| WillMsg {
            msg: Msg {
                topic: TOPICS[w.topic],
                payload: self.payload('w'),
                qos: qos(w.qos),
                retain: w.retain,
            },
            delay: if spec.v5 { w.delay } else { 0 },
        });
        let c = &mut self.clients[client];
        if spec.clean {
            // Clean Start: the client forgets its side too ([MQTT-3.1.2-4]).
            c.outbound.clear();
        }
        let version = if spec.v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        let expiry = if spec.v5 { spec.expiry } else { 0 };
        let receive_maximum = spec.receive_maximum.filter(|_| spec.v5);
        let mut props = vec![Property::SessionExpiryInterval(expiry)];
        props.extend(receive_maximum.map(Property::ReceiveMaximum));
        let will_props = will
            .as_ref()
            .filter(|w| w.delay > 0)
            .map(|w| Property::WillDelayInterval(w.delay));
        let will_props: Vec<Property<'_>> = will_props.into_iter().collect();
        let id = c.id.clone();
        let mut connect = connect_packet(version, &id, spec.clean, spec.keep_alive);
        if spec.v5 {
            connect.properties = List::new(&props);
        }
        connect.will = will.as_ref().map(|w| Will {
            qos: w.msg.qos,
            retain: w.msg.retain,
            properties: List::new(&will_props),
            topic: w.msg.topic,
            payload: &w.msg.payload,
        });
        let handle = self.sim.connect_with(&connect);
        let c = &mut self.clients[client];
        c.handle = Some(handle);
        c.v5 = spec.v5;
        self.step(Input::Connect {
            client,
            takeover,
            v5: spec.v5,
            clean: spec.clean,
            expiry,
            receive_max: receive_maximum.unwrap_or(match spec.v5 {
                true => u16::MAX,
                false => config().max_inflight,
            }),
            keep_alive: spec.keep_alive,
            will,
        })?;
        Ok(())
    }

    /// The client's side of resuming: with Session Present 1 it re-sends what it had in
    /// flight, in order ([MQTT-4.4.0-1]); with 0 it forgets it.
    fn resume(&mut self, client: usize, present: bool) -> Result<(), String> {
        if !present {
            self.clients[client].outbound.clear();
            return Ok(());
        }
        for o in self.clients[client].outbound.clone() {
            if self.clients[client].handle.is_none() {
                break;
            }
            if o.released {
                self.send(client, &Packet::PubRel(Ack::new(pid(o.pid))));
                self.step(Input::Release { client, pid: o.pid })?;
            } else {
                self.send_publish(client, o.pid, &o.msg, true);
                self.step(Input::Publish {
                    client,
                    pid: Some(o.pid),
                    msg: o.msg.clone(),
                })?;
            }
        }
        Ok(())
    }

    fn send_publish(&mut self, client: usize, id: u16, msg: &Msg, dup: bool) {
        let qos_pid = match msg.qos {
            QoS::AtMostOnce => QoSPid::AtMostOnce,
            QoS::AtLeastOnce => QoSPid::AtLeastOnce(pid(id)),
            QoS::ExactlyOnce => QoSPid::ExactlyOnce(pid(id)),
        };
        self.send(
            client,
            &Packet::Publish(Publish {
                dup,
                qos_pid,
                retain: msg.retain,
                topic: msg.topic,
                properties: Properties::empty(),
                payload: &msg.payload,
            }),
        );
    }

    /// The client handles up to `count` received packets, oldest first, answering as
    /// §4.3 asks (acknowledgments go out in the order the PUBLISHes came, §4.6).
    fn acknowledge(&mut self, client: usize, count: usize) -> Result<(), String> {
        for _ in 0..count {
            if self.clients[client].handle.is_none() {
                break;
            }
            let Some(packet) = self.clients[client].pending.pop_front() else {
                break;
            };
            match packet {
                Received::Publish {
                    qos: QoS::AtLeastOnce,
                    packet_id: Some(id),
                    ..
                } => {
                    self.send(client, &Packet::PubAck(Ack::new(id)));
                    self.step(Input::PubAck {
                        client,
                        pid: id.get(),
                    })?;
                }
                Received::Publish {
                    qos: QoS::ExactlyOnce,
                    packet_id: Some(id),
                    ..
                } => {
                    self.send(client, &Packet::PubRec(Ack::new(id)));
                    self.step(Input::PubRec {
                        client,
                        pid: id.get(),
                    })?;
                }
                Received::PubRel(id, _) => {
                    self.send(client, &Packet::PubComp(Ack::new(id)));
                    self.step(Input::PubComp {
                        client,
                        pid: id.get(),
                    })?;
                }
                Received::PubAck(id, _) | Received::PubComp(id, _) => {
                    self.clients[client].outbound.retain(|o| o.pid != id.get());
                }
                Received::PubRec(id, code) => {
                    let outbound = &mut self.clients[client].outbound;
                    if code.is_error() {
                        outbound.retain(|o| o.pid != id.get());
                        continue;
                    }
                    if let Some(o) = outbound.iter_mut().find(|o| o.pid == id.get()) {
                        o.released = true;
                    }
                    self.send(client, &Packet::PubRel(Ack::new(id)));
                    self.step(Input::Release {
                        client,
                        pid: id.get(),
                    })?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn run_op(&mut self, op: &Op) -> Result<(), String> {
        let n = self.clients.len();
        let connected = |r: &Self, c: usize| r.clients[c].handle.is_some();
        match op.clone() {
            Op::Connect(client, spec) | Op::Takeover(client, spec) => {
                let client = client % n;
                self.connect(client, &spec, matches!(op, Op::Takeover(..)))?;
                let present = self.connack_present(client);
                self.resume(client, present)?;
            }
            Op::Subscribe {
                client,
                filter,
                qos: q,
                no_local,
                retain_as_published,
                retain_handling,
                id,
            } => {
                let client = client % n;
                if !connected(self, client) {
                    return Ok(());
                }
                let v5 = self.clients[client].v5;
                // 3.1.1 has only the QoS; [MQTT-3.8.3-4]: No Local is not for shared ones.
                let sub = Sub {
                    qos: qos(q),
                    no_local: v5 && no_local && !is_shared(filter),
                    retain_as_published: v5 && retain_as_published,
                    retain_handling: match retain_handling {
                        _ if !v5 => RetainHandling::SendOnSubscribe,
                        0 => RetainHandling::SendOnSubscribe,
                        1 => RetainHandling::SendIfNew,
                        _ => RetainHandling::DoNotSend,
                    },
                    id: id.filter(|_| v5),
                };
                let id = self.clients[client].pid();
                let options = SubscriptionOptions {
                    qos: sub.qos,
                    no_local: sub.no_local,
                    retain_as_published: sub.retain_as_published,
                    retain_handling: sub.retain_handling,
                };
                let subs = [Subscription::new(FILTERS[filter], options)];
                let props: Vec<Property<'_>> = sub
                    .id
                    .map(Property::SubscriptionIdentifier)
                    .into_iter()
                    .collect();
                self.send(
                    client,
                    &Packet::Subscribe(Subscribe {
                        packet_id: pid(id),
                        properties: List::new(&props),
                        subscriptions: List::new(&subs),
                    }),
                );
                self.step(Input::Subscribe {
                    client,
                    pid: id,
                    filter,
                    sub,
                })?;
            }
            Op::Unsubscribe { client, filter } => {
                let client = client % n;
                if !connected(self, client) {
                    return Ok(());
                }
                let id = self.clients[client].pid();
                let filters = [FILTERS[filter]];
                self.send(
                    client,
                    &Packet::Unsubscribe(Unsubscribe {
                        packet_id: pid(id),
                        properties: Properties::empty(),
                        filters: List::new(&filters),
                    }),
                );
                self.step(Input::Unsubscribe {
                    client,
                    pid: id,
                    filter,
                })?;
            }
            Op::Publish {
                client,
                topic,
                qos: q,
                retain,
                clear,
            } => {
                let client = client % n;
                if !connected(self, client) {
                    return Ok(());
                }
                let payload = if retain && clear {
                    Vec::new()
                } else {
                    self.payload('m')
                };
                let msg = Msg {
                    topic: TOPICS[topic],
                    payload,
                    qos: qos(q),
                    retain,
                };
                let id = match msg.qos {
                    QoS::AtMostOnce => None,
                    _ => {
                        let c = &mut self.clients[client];
                        let id = c.pid();
                        c.outbound.push(Outbound {
                            pid: id,
                            msg: msg.clone(),
                            released: false,
                        });
                        Some(id)
                    }
                };
                self.send_publish(client, id.unwrap_or(0), &msg, false);
                self.step(Input::Publish {
                    client,
                    pid: id,
                    msg,
                })?;
            }
            Op::Ack { client, count } => self.acknowledge(client % n, count)?,
            Op::Ping(client) => {
                let client = client % n;
                if connected(self, client) {
                    self.send(client, &Packet::PingReq);
                    self.step(Input::Ping { client })?;
                }
            }
            Op::Disconnect {
                client,
                expiry,
                with_will,
            } => {
                let client = client % n;
                if let Some(h) = self.clients[client].handle {
                    let v5 = self.clients[client].v5;
                    let expiry = expiry.filter(|_| v5);
                    let with_will = with_will && v5;
                    let props: Vec<Property<'_>> = expiry
                        .map(Property::SessionExpiryInterval)
                        .into_iter()
                        .collect();
                    let reason = if with_will {
                        ReasonCode::DisconnectWithWill
                    } else {
                        ReasonCode::Success
                    };
                    self.sim.send(
                        h,
                        &Packet::Disconnect(Disconnect {
                            reason_code: reason,
                            properties: List::new(&props),
                        }),
                    );
                    self.step(Input::Disconnect {
                        client,
                        expiry,
                        with_will,
                    })?;
                    self.clients[client].handle = None;
                    self.clients[client].pending.clear();
                }
            }
            Op::Drop(client) => {
                let client = client % n;
                if let Some(h) = self.clients[client].handle {
                    self.sim.drop_connection(h);
                    self.step(Input::Drop { client })?;
                    self.clients[client].handle = None;
                    self.clients[client].pending.clear();
                }
            }
            Op::Advance(seconds) => {
                self.sim.advance(Duration::from_secs(u64::from(seconds)));
                self.step(Input::Advance {
                    ms: u64::from(seconds) * 1000,
                })?;
            }
        }
        Ok(())
    }

    fn connack_present(&self, client: usize) -> bool {
        self.clients[client].session_present
    }

    /// The end of a history: every client comes back to its session and handles all it
    /// gets, so what the broker kept for offline sessions is compared too, and every flow
    /// must complete.
    fn drain(&mut self) -> Result<(), String> {
        for client in 0..self.clients.len() {
            if self.clients[client].handle.is_none() {
                let spec = ConnectSpec {
                    v5: self.clients[client].v5,
                    clean: false,
                    expiry: 3600,
                    receive_maximum: None,
                    keep_alive: 0,
                    will: None,
                };
                self.connect(client, &spec, false)?;
                let present = self.connack_present(client);
                self.resume(client, present)?;
            }
        }
        for _ in 0..8 {
            for client in 0..self.clients.len() {
                self.acknowledge(client, usize::MAX)?;
            }
            if self.clients.iter().all(|c| c.pending.is_empty()) {
                break;
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if !c.outbound.is_empty() || !c.pending.is_empty() {
                return Err(format!("client {i} did not finish: {c:?}"));
            }
        }
        for world in &self.worlds {
            for (i, s) in &world.sessions {
                if !s.queue.is_empty() {
                    return Err(format!("model: client {i} still has {:?}", s.queue));
                }
            }
        }
        Ok(())
    }
}

/// Runs a history; returns the surviving world's tally, the packets compared and the most
/// worlds alive at once.
/// What a history showed.
#[derive(Debug, Default)]
struct Outcome {
    /// The surviving world's tally.
    tally: Tally,
    /// Packets the clients sent (each a comparison).
    steps: u64,
    /// The most worlds alive at once.
    max_worlds: usize,
    /// Cut short with too many worlds.
    inconclusive: bool,
}

/// Runs a history.
fn run_case(case: &Case) -> Result<Outcome, String> {
    let mut runner = Runner::new(case.clients);
    let result = run_history(&mut runner, case);
    let outcome = Outcome {
        tally: runner.worlds.first().map(|w| w.tally).unwrap_or_default(),
        steps: runner.steps,
        max_worlds: runner.max_worlds,
        inconclusive: runner.inconclusive,
    };
    match result {
        Err(_) if runner.inconclusive => Ok(outcome),
        Err(e) => Err(e),
        Ok(()) => Ok(outcome),
    }
}

fn run_history(runner: &mut Runner, case: &Case) -> Result<(), String> {
    for (client, (spec, filter, qos)) in case.initial.iter().take(case.clients).enumerate() {
        runner.run_op(&Op::Connect(client, spec.clone()))?;
        runner.run_op(&Op::Subscribe {
            client,
            filter: *filter,
            qos: *qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            id: None,
        })?;
    }
    for op in &case.ops {
        runner.run_op(op)?;
    }
    runner.drain()
}

// --- Histories -------------------------------------------------------------------------

fn connect_spec() -> impl Strategy<Value = ConnectSpec> {
    let will = (
        0..TOPICS.len(),
        0u8..3,
        any::<bool>(),
        prop::sample::select(vec![0u32, 15]),
    )
        .prop_map(|(topic, qos, retain, delay)| WillSpec {
            topic,
            qos,
            retain,
            delay,
        });
    (
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![0u32, 20, 200, u32::MAX]),
        prop::option::weighted(0.4, prop::sample::select(vec![1u16, 2, 4])),
        prop::sample::select(vec![0u16, 0, 0, 10, 60]),
        prop::option::weighted(0.3, will),
    )
        .prop_map(
            |(v5, clean, expiry, receive_maximum, keep_alive, will)| ConnectSpec {
                v5,
                clean,
                expiry,
                receive_maximum,
                keep_alive,
                will,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..MAX_CLIENTS;
    prop_oneof![
        2 => (client.clone(), connect_spec()).prop_map(|(c, s)| Op::Connect(c, s)),
        4 => (
            client.clone(),
            0..FILTERS.len(),
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            0u8..3,
            prop::option::of(1u32..4),
        )
            .prop_map(
                |(client, filter, qos, no_local, retain_as_published, retain_handling, id)| {
                    Op::Subscribe {
                        client,
                        filter,
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                        id,
                    }
                }
            ),
        1 => (client.clone(), 0..FILTERS.len())
            .prop_map(|(client, filter)| Op::Unsubscribe { client, filter }),
        6 => (
            client.clone(),
            0..TOPICS.len(),
            0u8..3,
            any::<bool>(),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(client, topic, qos, retain, clear)| Op::Publish {
                client,
                topic,
                qos,
                retain,
                clear,
            }),
        // Mostly one packet at a time, so connections often break mid-flow.
        5 => (client.clone(), prop_oneof![3 => Just(1usize), 1 => 2usize..5])
            .prop_map(|(client, count)| Op::Ack { client, count }),
        1 => client.clone().prop_map(Op::Ping),
        1 => (client.clone(), connect_spec()).prop_map(|(c, s)| Op::Takeover(c, s)),
        1 => (
            client.clone(),
            prop::option::weighted(0.3, prop::sample::select(vec![0u32, 30])),
            prop::bool::weighted(0.3),
        )
            .prop_map(|(client, expiry, with_will)| Op::Disconnect {
                client,
                expiry,
                with_will,
            }),
        2 => client.prop_map(Op::Drop),
        2 => (1u16..40).prop_map(Op::Advance),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        3..=MAX_CLIENTS,
        prop::collection::vec((connect_spec(), 0..FILTERS.len(), 0u8..3), MAX_CLIENTS),
        prop::collection::vec(op(), 1..80),
    )
        .prop_map(|(clients, initial, ops)| Case {
            clients,
            initial,
            ops,
        })
}

/// The property: for random histories the broker sends exactly what one of the model's
/// possible worlds predicts. Deterministic: a fixed seed unless `PROPTEST_RNG_SEED` names
/// another; `PROPTEST_CASES` changes the number of cases (256 by default).
#[test]
fn broker_agrees_with_the_model() {
    let coverage = RefCell::new(Coverage::default());
    let defaults = ProptestConfig::default();
    let config = ProptestConfig {
        rng_seed: match defaults.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0xF01A_4A11),
            chosen => chosen,
        },
        failure_persistence: None,
        ..defaults
    };
    let cases = u64::from(config.cases);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        let outcome = run_case(&case).map_err(TestCaseError::fail)?;
        let mut c = coverage.borrow_mut();
        c.cases += 1;
        c.inconclusive += u64::from(outcome.inconclusive);
        c.cases_with_deliveries += u64::from(outcome.tally.delivered > 0);
        c.steps += outcome.steps;
        c.max_worlds = c.max_worlds.max(outcome.max_worlds);
        c.tally.add(&outcome.tally);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = coverage.into_inner();
    eprintln!("{c:#?}");
    // Not vacuous: most histories deliver messages, and every mechanism is exercised.
    let t = &c.tally;
    assert!(c.cases_with_deliveries * 10 >= c.cases * 9, "{c:#?}");
    assert!(c.inconclusive * 100 <= c.cases, "{c:#?}");
    assert!(t.delivered >= cases * 10, "{c:#?}");
    for (what, count) in [
        ("QoS 0", t.by_qos[0]),
        ("QoS 1", t.by_qos[1]),
        ("QoS 2", t.by_qos[2]),
        ("re-sent PUBLISH", t.resent_publish),
        ("re-sent PUBREL", t.resent_pubrel),
        ("retained on subscribe", t.retained_on_subscribe),
        ("shared", t.shared),
        ("wills", t.wills),
        ("keep alive", t.keep_alive_closes),
        ("expiry", t.expired),
        ("resumed sessions", t.resumed),
        ("QoS 2 re-sends ignored", t.qos2_duplicates_ignored),
        ("takeovers", t.takeovers),
        ("expiry set on DISCONNECT", t.expiry_set_on_disconnect),
        ("held by Receive Maximum", t.held_by_receive_maximum),
    ] {
        assert!(count * 64 >= cases, "too few {what}: {c:#?}");
    }
}

// --- Regressions: bugs the property found, each as its smallest history --------------

/// A persistent 5.0 session with `rm` as Receive Maximum (`None`: not given).
fn connect_v5(sim: &mut Sim<Growable>, rm: Option<u16>) -> (ClientHandle, Vec<Received>) {
    let mut props = vec![Property::SessionExpiryInterval(600)];
    props.extend(rm.map(Property::ReceiveMaximum));
    let mut connect = connect_packet(ProtocolVersion::V5, "sub", false, 0);
    connect.properties = List::new(&props);
    let sub = sim.connect_with(&connect);
    let got = sim.received(sub);
    (sub, got)
}

fn publishes(got: &[Received]) -> Vec<(Vec<u8>, bool)> {
    got.iter()
        .filter_map(|r| match r {
            Received::Publish { payload, dup, .. } => Some((payload.clone(), *dup)),
            _ => None,
        })
        .collect()
}

/// [MQTT-3.3.4-9]: the Server MUST NOT send more than Receive Maximum QoS 1 and QoS 2
/// PUBLISH packets for which it has not received PUBACK, PUBCOMP, or PUBREC with a Reason
/// Code of 128 or greater. The Receive Maximum and the send quota belong to the network
/// connection (5.0 §4.9), so the PUBLISHes re-sent when a session resumes
/// ([MQTT-4.4.0-1]) count against the new connection's. The broker used to re-send all of
/// them at once: five unacknowledged QoS 1 messages went to a client that had just said
/// it takes two.
#[test]
fn resends_after_reconnect_respect_the_new_receive_maximum() {
    let mut sim = Sim::<Growable>::new(config());
    let (sub, _) = connect_v5(&mut sim, None);
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = sim.connect(ProtocolVersion::V3_1_1, "pub", true, 0);
    for i in 0..5u8 {
        sim.publish(publisher, "t", &[i], QoS::AtLeastOnce, false);
    }
    assert_eq!(publishes(&sim.received(sub)).len(), 5);
    sim.drop_connection(sub);
    let (sub, got) = connect_v5(&mut sim, Some(2));
    assert!(matches!(
        got[0],
        Received::ConnAck {
            session_present: true,
            ..
        }
    ));
    // Two go again with DUP, in their first order ([MQTT-4.6.0-1]); each PUBACK makes room
    // for the next one.
    assert_eq!(
        publishes(&got),
        [(vec![0], true), (vec![1], true)],
        "{got:?}"
    );
    let mut unacked: VecDeque<Received> = got.into_iter().skip(1).collect();
    let mut seen = vec![0u8, 1];
    sim.publish(publisher, "t", &[5], QoS::AtLeastOnce, false);
    assert_eq!(
        publishes(&sim.received(sub)),
        [],
        "no room for a new one either"
    );
    while let Some(r) = unacked.pop_front() {
        sim.acknowledge(sub, &r);
        let got = sim.received(sub);
        assert!(got.len() <= 1, "one place freed, {got:?}");
        for (payload, dup) in publishes(&got) {
            assert_eq!(dup, payload[0] < 5, "{got:?}");
            seen.push(payload[0]);
        }
        unacked.extend(got);
    }
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
}

/// The same rule with QoS 2: a PUBREL is never held back by the window
/// ([MQTT-3.3.4-10]), and re-sent PUBLISHes go one at a time to a client that takes one.
#[test]
fn qos2_resends_respect_the_receive_maximum_and_pubrel_is_not_held() {
    let mut sim = Sim::<Growable>::new(config());
    let (sub, _) = connect_v5(&mut sim, None);
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    let publisher = sim.connect(ProtocolVersion::V3_1_1, "pub", true, 0);
    for i in 0..3u8 {
        sim.publish(publisher, "t", &[i], QoS::ExactlyOnce, false);
    }
    let got = sim.received(sub);
    assert_eq!(publishes(&got).len(), 3);
    // The first reaches PUBREC; its PUBREL is lost with the connection.
    sim.acknowledge(sub, &got[0]);
    assert!(matches!(&sim.received(sub)[..], [Received::PubRel(..)]));
    sim.drop_connection(sub);
    let (sub, got) = connect_v5(&mut sim, Some(1));
    let rel = got.iter().find(|r| matches!(r, Received::PubRel(..)));
    let rel = rel.cloned().expect("PUBREL goes again whatever the window");
    assert!(publishes(&got).len() <= 1, "{got:?}");
    let mut seen: Vec<u8> = publishes(&got).iter().map(|(p, _)| p[0]).collect();
    let mut unacked: VecDeque<Received> = got
        .into_iter()
        .filter(|r| matches!(r, Received::Publish { .. }))
        .collect();
    sim.acknowledge(sub, &rel);
    let got = sim.received(sub);
    assert!(publishes(&got).len() <= 1, "{got:?}");
    seen.extend(publishes(&got).iter().map(|(p, _)| p[0]));
    unacked.extend(got);
    while let Some(r) = unacked.pop_front() {
        sim.acknowledge(sub, &r);
        let got = sim.received(sub);
        assert!(publishes(&got).len() <= 1, "{got:?}");
        seen.extend(publishes(&got).iter().map(|(p, _)| p[0]));
        unacked.extend(got);
    }
    assert_eq!(seen, [1, 2]);
}
