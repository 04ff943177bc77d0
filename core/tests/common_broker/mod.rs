//! Shared support for the broker's deterministic tests (`broker_*.rs`): the fixed-capacity
//! storage they run on besides [`Growable`], the macro that instantiates every test for
//! both back-ends, and small helpers to build packets and read what a client received.
//!
//! Every test is a generic `fn name<S: BrokerStorage>()`; [`storage_tests!`] turns a list of
//! them into `growable::name` and `fixed::name` test functions, so the one algorithm is
//! checked in both kinds of memory (ARCHITECTURE.md: "one algorithm, two storage
//! back-ends").

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use fulmar_core::broker::{Broker, BrokerStorage, Config, Hooks};
use fulmar_core::codec::{
    Connect, Packet, PacketId, Properties, Property, ProtocolVersion, QoS, QoSPid, ReasonCode, Will,
};
use fulmar_core::sim::{ClientHandle, Received, Sim};
use fulmar_core::time::Duration;

pub(crate) use fulmar_core::broker::Growable;

fulmar_core::fixed_broker_storage! {
    /// Room for every test of the suite that does not test capacity itself.
    pub(crate) struct Fixed {
        connections: 16, sessions: 16, subscriptions: 64, topic_nodes: 128,
        share_groups: 8, text: 64, messages: 128, queue: 256, controls: 64,
        inbound: 96, aliases: 32, retained: 32, blob_bytes: 16384, slots: 256,
    }
}

fulmar_core::fixed_broker_storage! {
    /// A broker that fills up quickly: three sessions, four subscriptions, eight messages.
    pub(crate) struct Tiny {
        connections: 6, sessions: 3, subscriptions: 4, topic_nodes: 16,
        share_groups: 2, text: 32, messages: 8, queue: 8, controls: 16,
        inbound: 4, aliases: 2, retained: 2, blob_bytes: 1024, slots: 32,
    }
}

/// Instantiates generic tests `fn name<S: BrokerStorage>()` over both storage back-ends:
/// `growable::name` runs on [`Growable`], `fixed::name` on [`Fixed`].
macro_rules! storage_tests {
    ($($name:ident),* $(,)?) => {
        mod growable {
            $(
                #[test]
                fn $name() {
                    super::$name::<$crate::common_broker::Growable>();
                }
            )*
        }
        mod fixed {
            $(
                #[test]
                fn $name() {
                    super::$name::<$crate::common_broker::Fixed>();
                }
            )*
        }
    };
}

pub(crate) const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;
pub(crate) const QOS0: QoS = QoS::AtMostOnce;
pub(crate) const QOS1: QoS = QoS::AtLeastOnce;
pub(crate) const QOS2: QoS = QoS::ExactlyOnce;

/// A simulation around a broker with `config` that allows everything.
pub(crate) fn sim<S: BrokerStorage>(config: Config) -> Sim<S> {
    Sim::new(config)
}

/// A simulation around a broker with `config` and `hooks`.
pub(crate) fn sim_with_hooks<S: BrokerStorage, H: Hooks>(config: Config, hooks: H) -> Sim<S, H> {
    Sim::with_broker(Broker::with_hooks(config, 7, hooks))
}

/// A CONNECT with every field given.
pub(crate) fn connect<'a>(
    version: ProtocolVersion,
    client_id: &'a str,
    clean: bool,
    keep_alive: u16,
    properties: &'a [Property<'a>],
    will: Option<Will<'a>>,
) -> Connect<'a> {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive,
        properties: Properties::new(properties),
        client_id,
        will,
        username: None,
        password: None,
    }
}

/// Sends `connect` and asserts that the CONNACK accepts it; returns the client, whether
/// the CONNACK said Session Present, and what the client received after the CONNACK (a
/// resumed session's messages).
pub(crate) fn connect_get<S: BrokerStorage, H: Hooks>(
    sim: &mut Sim<S, H>,
    connect: &Connect<'_>,
) -> (ClientHandle, bool, Vec<Received>) {
    let client = sim.connect_with(connect);
    let mut got = sim.received(client);
    match got.first() {
        Some(Received::ConnAck {
            code: ReasonCode::Success,
            session_present,
            ..
        }) => {
            let present = *session_present;
            got.remove(0);
            (client, present, got)
        }
        _ => panic!(
            "{}: expected a successful CONNACK, got {got:?}",
            connect.client_id
        ),
    }
}

/// [`connect_get`] for a connection that receives nothing after its CONNACK.
pub(crate) fn connect_ok<S: BrokerStorage, H: Hooks>(
    sim: &mut Sim<S, H>,
    connect: &Connect<'_>,
) -> (ClientHandle, bool) {
    let (client, present, rest) = connect_get(sim, connect);
    assert_eq!(
        rest,
        [],
        "{}: unexpected packets after CONNACK",
        connect.client_id
    );
    (client, present)
}

/// Connects a 5.0 client with a Session Expiry Interval (a persistent session); returns
/// what [`connect_get`] does.
pub(crate) fn connect_v5_persistent<S: BrokerStorage, H: Hooks>(
    sim: &mut Sim<S, H>,
    client_id: &str,
    clean: bool,
    expiry: u32,
) -> (ClientHandle, bool, Vec<Received>) {
    let props = [Property::SessionExpiryInterval(expiry)];
    connect_get(sim, &connect(V5, client_id, clean, 0, &props, None))
}

/// Connects a persistent session in `version`: 3.1.1 clean session 0, or 5.0 with a
/// Session Expiry Interval of an hour; `resume` false starts afresh (5.0 Clean Start 1;
/// 3.1.1 cannot, so it resumes whatever is stored). Returns what [`connect_get`] does.
pub(crate) fn connect_persistent<S: BrokerStorage, H: Hooks>(
    sim: &mut Sim<S, H>,
    version: ProtocolVersion,
    client_id: &str,
    resume: bool,
) -> (ClientHandle, bool, Vec<Received>) {
    if version.is_v5() {
        connect_v5_persistent(sim, client_id, !resume, 3600)
    } else {
        connect_get(sim, &connect(V3, client_id, false, 0, &[], None))
    }
}

/// A published message as a client sees it, without the details most tests ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Msg {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
}

/// The PUBLISH packets among `got`, in order.
pub(crate) fn messages(got: &[Received]) -> Vec<Msg> {
    got.iter()
        .filter_map(|r| match r {
            Received::Publish {
                topic,
                payload,
                qos,
                retain,
                dup,
                ..
            } => Some(Msg {
                topic: topic.clone(),
                payload: payload.clone(),
                qos: *qos,
                retain: *retain,
                dup: *dup,
            }),
            _ => None,
        })
        .collect()
}

/// The payloads of the PUBLISH packets among `got`, as strings, in order.
pub(crate) fn payloads(got: &[Received]) -> Vec<String> {
    messages(got)
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

/// Asserts that `got` is exactly one PUBLISH and returns it.
pub(crate) fn single_publish(got: &[Received]) -> Received {
    match got {
        [p @ Received::Publish { .. }] => p.clone(),
        _ => panic!("expected exactly one PUBLISH, got {got:?}"),
    }
}

/// The packet identifier of a received PUBLISH.
pub(crate) fn pid_of(received: &Received) -> PacketId {
    match received {
        Received::Publish {
            packet_id: Some(id),
            ..
        } => *id,
        other => panic!("expected a QoS 1/2 PUBLISH, got {other:?}"),
    }
}

/// Receives and acknowledges every PUBLISH (and PUBREL) until nothing more arrives;
/// returns the payloads in order.
pub(crate) fn drain_acking<S: BrokerStorage, H: Hooks>(
    sim: &mut Sim<S, H>,
    client: ClientHandle,
) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let got = sim.received(client);
        if got.is_empty() {
            return out;
        }
        out.extend(payloads(&got));
        for r in &got {
            sim.acknowledge(client, r);
        }
    }
    panic!("the broker keeps sending");
}

/// Asserts the broker closed the client's connection; for a 5.0 client, that the last
/// packet it got was DISCONNECT with `v5_reason` ([MQTT-4.13.1-1]); a 3.1.1 client gets no
/// DISCONNECT, only the closed connection.
pub(crate) fn assert_closed_with<S: BrokerStorage, H: Hooks>(
    sim: &mut Sim<S, H>,
    client: ClientHandle,
    version: ProtocolVersion,
    v5_reason: ReasonCode,
) {
    assert!(!sim.is_connected(client), "the connection is still open");
    let got = sim.received(client);
    if version.is_v5() {
        assert_eq!(
            got.last(),
            Some(&Received::Disconnect(v5_reason)),
            "5.0 client: expected DISCONNECT {v5_reason}, got {got:?}"
        );
    } else {
        assert!(
            !got.iter().any(|r| matches!(r, Received::Disconnect(_))),
            "3.1.1 has no server DISCONNECT: {got:?}"
        );
    }
}

/// A PUBLISH packet with every field given.
pub(crate) fn publish_packet<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos_pid: QoSPid,
    dup: bool,
    retain: bool,
    properties: &'a [Property<'a>],
) -> Packet<'a> {
    Packet::Publish(fulmar_core::codec::Publish {
        dup,
        qos_pid,
        retain,
        topic,
        properties: Properties::new(properties),
        payload,
    })
}

/// Seconds as a [`Duration`].
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A will with properties.
pub(crate) fn will_with<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
    properties: &'a [Property<'a>],
) -> Will<'a> {
    Will {
        qos,
        retain,
        properties: Properties::new(properties),
        topic,
        payload,
    }
}

/// Hooks for authentication and authorization tests: user `user` must give password
/// `secret`; client identifiers starting with `banned` are not authorized; nobody may
/// publish or subscribe under `private/`.
#[derive(Debug, Default)]
pub(crate) struct Guard;

impl Hooks for Guard {
    fn authenticate(&mut self, request: &fulmar_core::broker::ConnectRequest<'_>) -> ReasonCode {
        if request.client_id.starts_with("banned") {
            return ReasonCode::NotAuthorized;
        }
        match (request.username, request.password) {
            (Some("user"), Some(b"secret")) | (None, None) => ReasonCode::Success,
            _ => ReasonCode::BadUserNameOrPassword,
        }
    }

    fn authorize_publish(
        &mut self,
        _client: &fulmar_core::broker::ClientInfo<'_>,
        topic: &str,
        _qos: QoS,
        _retain: bool,
    ) -> bool {
        !topic.starts_with("private/")
    }

    fn authorize_subscribe(
        &mut self,
        _client: &fulmar_core::broker::ClientInfo<'_>,
        filter: &str,
        _qos: QoS,
    ) -> bool {
        !filter.starts_with("private/")
    }
}

/// A CONNECT packet as raw bytes with any protocol name and level (for levels the codec
/// cannot encode): clean session, keep alive 60, no will, no credentials, and for level 5
/// an empty property list.
pub(crate) fn raw_connect(name: &[u8], level: u8, client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.push(level);
    body.push(0x02);
    body.extend_from_slice(&60u16.to_be_bytes());
    if level >= 5 {
        body.push(0);
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}
