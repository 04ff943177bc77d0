//! A deterministic simulation: several MQTT clients talking to one [`Broker`] in virtual
//! time, with no sockets and no clock (feature `alloc`).
//!
//! It is how Fulmar's own tests drive the broker, and the shortest way to see the sans-IO
//! API at work: every client is a byte stream into [`Broker::handle_bytes`] and out of
//! [`Broker::poll_transmit`], and time only moves when [`Sim::advance`] jumps it to the
//! broker's next [`Broker::poll_timeout`].
//!
//! ```
//! use fulmar_core::broker::{Config, Growable};
//! use fulmar_core::codec::{ProtocolVersion, QoS};
//! use fulmar_core::sim::{Received, Sim};
//!
//! let mut sim = Sim::<Growable>::new(Config::default());
//! let sub = sim.connect(ProtocolVersion::V5, "sub", true, 60);
//! sim.subscribe(sub, "sensors/+", QoS::AtLeastOnce);
//! let publisher = sim.connect(ProtocolVersion::V3_1_1, "pub", true, 60);
//! sim.publish(publisher, "sensors/t1", b"21.5", QoS::AtMostOnce, false);
//! let got = sim.received(sub);
//! assert!(matches!(&got[..], [Received::Publish { topic, .. }] if topic == "sensors/t1"));
//! ```

// A test harness: its panics are assertion failures in the test that drives it.
#![allow(clippy::panic)]

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::broker::{AllowAll, Broker, BrokerStorage, Config, ConnectionId, Event, Hooks};
use crate::codec::{
    Ack, Connect, Disconnect, List, Packet, PacketId, Properties, Property, ProtocolVersion,
    Publish, QoS, QoSPid, ReasonCode, Subscribe, Subscription, SubscriptionOptions, Unsubscribe,
    Will, decode,
};
use crate::time::{Duration, Instant};

/// A packet a simulated client received, owned so tests can keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// CONNACK.
    ConnAck {
        /// Session Present.
        session_present: bool,
        /// Reason code (3.x return codes are mapped to their 5.0 equivalents).
        code: ReasonCode,
        /// Assigned Client Identifier (5.0).
        assigned_client_id: Option<String>,
        /// Server Keep Alive (5.0).
        server_keep_alive: Option<u16>,
        /// Receive Maximum (5.0).
        receive_maximum: Option<u16>,
        /// Topic Alias Maximum (5.0).
        topic_alias_maximum: Option<u16>,
    },
    /// PUBLISH.
    Publish {
        /// Topic name.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// QoS.
        qos: QoS,
        /// Packet identifier (QoS 1 and 2).
        packet_id: Option<PacketId>,
        /// RETAIN flag.
        retain: bool,
        /// DUP flag.
        dup: bool,
        /// Message Expiry Interval (5.0).
        message_expiry: Option<u32>,
        /// Subscription Identifiers (5.0).
        subscription_ids: Vec<u32>,
        /// User properties (5.0).
        user_properties: Vec<(String, String)>,
        /// The Topic Alias the broker used (the topic above is already resolved, as a
        /// client library would).
        topic_alias: Option<u16>,
    },
    /// PUBACK.
    PubAck(PacketId, ReasonCode),
    /// PUBREC.
    PubRec(PacketId, ReasonCode),
    /// PUBREL.
    PubRel(PacketId, ReasonCode),
    /// PUBCOMP.
    PubComp(PacketId, ReasonCode),
    /// SUBACK.
    SubAck(PacketId, Vec<ReasonCode>),
    /// UNSUBACK.
    UnsubAck(PacketId, Vec<ReasonCode>),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(ReasonCode),
    /// AUTH: reason code and Authentication Data.
    Auth(ReasonCode, Option<Vec<u8>>),
    /// A packet a server should never send.
    Unexpected(String),
}

impl Received {
    fn from_packet(packet: &Packet<'_>) -> Self {
        match packet {
            Packet::ConnAck(ack) => {
                let find = |id: u8| ack.properties.find(id);
                Self::ConnAck {
                    session_present: ack.session_present,
                    code: ack.reason_code,
                    assigned_client_id: match find(0x12) {
                        Some(Property::AssignedClientIdentifier(s)) => Some(s.to_string()),
                        _ => None,
                    },
                    server_keep_alive: match find(0x13) {
                        Some(Property::ServerKeepAlive(v)) => Some(v),
                        _ => None,
                    },
                    receive_maximum: ack.properties.receive_maximum(),
                    topic_alias_maximum: match find(0x22) {
                        Some(Property::TopicAliasMaximum(v)) => Some(v),
                        _ => None,
                    },
                }
            }
            Packet::Publish(p) => Self::Publish {
                topic: p.topic.to_string(),
                payload: p.payload.to_vec(),
                qos: p.qos(),
                packet_id: p.packet_id(),
                retain: p.retain,
                dup: p.dup,
                message_expiry: p.properties.message_expiry_interval(),
                subscription_ids: p.properties.subscription_identifiers().collect(),
                user_properties: p
                    .properties
                    .user_properties()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                topic_alias: p.properties.topic_alias(),
            },
            Packet::PubAck(a) => Self::PubAck(a.packet_id, a.reason_code),
            Packet::PubRec(a) => Self::PubRec(a.packet_id, a.reason_code),
            Packet::PubRel(a) => Self::PubRel(a.packet_id, a.reason_code),
            Packet::PubComp(a) => Self::PubComp(a.packet_id, a.reason_code),
            Packet::SubAck(a) => Self::SubAck(a.packet_id, a.reason_codes.iter().collect()),
            Packet::UnsubAck(a) => Self::UnsubAck(a.packet_id, a.reason_codes.iter().collect()),
            Packet::PingResp => Self::PingResp,
            Packet::Disconnect(d) => Self::Disconnect(d.reason_code),
            Packet::Auth(a) => Self::Auth(
                a.reason_code,
                a.properties.iter().find_map(|p| match p {
                    Property::AuthenticationData(d) => Some(d.to_vec()),
                    _ => None,
                }),
            ),
            other => Self::Unexpected(alloc::format!("{other:?}")),
        }
    }
}

/// Handle of a simulated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientHandle(usize);

#[derive(Debug)]
struct SimClient {
    connection: Option<ConnectionId>,
    version: ProtocolVersion,
    inbox: VecDeque<Received>,
    /// Bytes from the broker not yet decoded.
    stream: Vec<u8>,
    /// Why the broker closed the connection, once it did.
    closed: Option<ReasonCode>,
    next_packet_id: u16,
    /// Topic aliases the broker set on this connection.
    aliases: alloc::collections::BTreeMap<u16, String>,
    /// Bytes written by the client that the broker did not take because backpressure
    /// stalled the connection (a socket's receive buffer); fed again on `Event::Resume`.
    unsent: Vec<u8>,
    /// Whether the client reads its socket: while it does not, the broker's output for
    /// it stays in the broker ([`Sim::stop_reading`]).
    reading: bool,
}

/// Clients and a broker in virtual time. See the [module documentation](self).
pub struct Sim<S: BrokerStorage, H: Hooks = AllowAll> {
    /// The broker under test.
    pub broker: Broker<S, H>,
    now: Instant,
    clients: Vec<SimClient>,
    buffer: Vec<u8>,
}

impl<S: BrokerStorage, H: Hooks> core::fmt::Debug for Sim<S, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl<S: BrokerStorage> Sim<S, AllowAll> {
    /// A simulation around a new broker with `config`.
    pub fn new(config: Config) -> Self {
        Self::with_broker(Broker::new(config, 0x5EED))
    }
}

impl<S: BrokerStorage, H: Hooks> Sim<S, H> {
    /// A simulation around `broker`.
    pub fn with_broker(broker: Broker<S, H>) -> Self {
        let size = broker.config().max_packet_size as usize + 8;
        Self {
            broker,
            now: Instant::ZERO,
            clients: Vec::new(),
            buffer: vec![0; size],
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Opens a transport connection for a new client speaking `version`; `None` if the
    /// broker refused the connection outright.
    pub fn open(&mut self, version: ProtocolVersion) -> Option<ClientHandle> {
        let connection = self.broker.handle_connect(self.now).ok()?;
        self.clients.push(SimClient {
            connection: Some(connection),
            version,
            inbox: VecDeque::new(),
            stream: Vec::new(),
            closed: None,
            next_packet_id: 0,
            aliases: Default::default(),
            unsent: Vec::new(),
            reading: true,
        });
        Some(ClientHandle(self.clients.len() - 1))
    }

    /// Opens a connection, sends CONNECT and returns the client; its CONNACK is the first
    /// thing in [`Sim::received`].
    pub fn connect_with(&mut self, connect: &Connect<'_>) -> ClientHandle {
        let client = self
            .open(connect.protocol)
            .unwrap_or_else(|| self.refused_client(connect.protocol));
        self.send(client, &Packet::from(connect));
        client
    }

    fn refused_client(&mut self, version: ProtocolVersion) -> ClientHandle {
        self.clients.push(SimClient {
            connection: None,
            version,
            inbox: VecDeque::new(),
            stream: Vec::new(),
            closed: Some(ReasonCode::ServerBusy),
            next_packet_id: 0,
            aliases: Default::default(),
            unsent: Vec::new(),
            reading: true,
        });
        ClientHandle(self.clients.len() - 1)
    }

    /// Connects a client and takes its CONNACK, which must accept it.
    pub fn connect(
        &mut self,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
        keep_alive: u16,
    ) -> ClientHandle {
        let client = self.connect_with(&connect_packet(version, client_id, clean, keep_alive));
        match self.received(client).first() {
            Some(Received::ConnAck {
                code: ReasonCode::Success,
                ..
            }) => client,
            other => panic!("{client_id}: expected a successful CONNACK, got {other:?}"),
        }
    }

    /// Encodes `packet` in the client's version and feeds it to the broker.
    pub fn send(&mut self, client: ClientHandle, packet: &Packet<'_>) {
        let version = match packet {
            Packet::Connect(c) => c.get().protocol,
            _ => self.clients[client.0].version,
        };
        let mut bytes = vec![0; packet.encoded_len(version)];
        if packet.encode(version, &mut bytes).is_ok() {
            self.send_bytes(client, &bytes);
        }
    }

    /// Feeds raw bytes to the broker as if they came from the client's socket.
    ///
    /// While backpressure stalls the connection the bytes wait, as in a socket buffer,
    /// and reach the broker when it resumes the connection.
    pub fn send_bytes(&mut self, client: ClientHandle, bytes: &[u8]) {
        if let Some(connection) = self.clients[client.0].connection {
            if self.broker.is_stalled(connection) {
                self.clients[client.0].unsent.extend_from_slice(bytes);
            } else {
                let used = self.broker.handle_bytes(connection, bytes, self.now);
                assert!(used <= bytes.len(), "consumed more than given");
                if self.broker.is_stalled(connection) {
                    self.clients[client.0]
                        .unsent
                        .extend_from_slice(&bytes[used..]);
                }
            }
        }
        self.pump();
    }

    /// Whether backpressure holds the client's input back.
    pub fn is_stalled(&self, client: ClientHandle) -> bool {
        self.clients[client.0]
            .connection
            .is_some_and(|c| self.broker.is_stalled(c))
    }

    /// Bytes the client wrote that the broker has not taken (it is stalled).
    pub fn unsent_len(&self, client: ClientHandle) -> usize {
        self.clients[client.0].unsent.len()
    }

    /// The client stops reading its socket: what the broker has for it stays unsent until
    /// [`Sim::resume_reading`].
    pub fn stop_reading(&mut self, client: ClientHandle) {
        self.clients[client.0].reading = false;
    }

    /// The client reads its socket again and takes what waited.
    pub fn resume_reading(&mut self, client: ClientHandle) {
        self.clients[client.0].reading = true;
        if let Some(connection) = self.clients[client.0].connection {
            self.drain(connection);
        }
        self.pump();
    }

    /// Feeds a resumed connection the bytes it held back.
    fn resume(&mut self, connection: ConnectionId) {
        let Some(client) = self
            .clients
            .iter_mut()
            .find(|c| c.connection == Some(connection))
        else {
            return;
        };
        let unsent = core::mem::take(&mut client.unsent);
        let used = self.broker.handle_bytes(connection, &unsent, self.now);
        if self.broker.is_stalled(connection)
            && let Some(client) = self
                .clients
                .iter_mut()
                .find(|c| c.connection == Some(connection))
        {
            client.unsent = unsent[used..].to_vec();
        }
    }

    /// Drains the broker's events: writes output to the clients, closes what it asks.
    pub fn pump(&mut self) {
        for _ in 0..1_000_000 {
            let Some(event) = self.broker.poll_event() else {
                return;
            };
            match event {
                Event::Transmit(connection) => self.drain(connection),
                Event::Connected(_) => {}
                Event::Resume(connection) => self.resume(connection),
                Event::Close(connection, reason) => {
                    self.drain(connection);
                    if let Some(c) = self
                        .clients
                        .iter_mut()
                        .find(|c| c.connection == Some(connection))
                    {
                        c.connection = None;
                        c.closed = Some(reason);
                    }
                    self.broker.handle_disconnect(connection, self.now);
                }
            }
        }
        panic!("the broker keeps producing events");
    }

    fn drain(&mut self, connection: ConnectionId) {
        let Some(index) = self
            .clients
            .iter()
            .position(|c| c.connection == Some(connection))
        else {
            return;
        };
        if !self.clients[index].reading {
            return;
        }
        loop {
            match self
                .broker
                .poll_transmit(connection, &mut self.buffer, self.now)
            {
                Ok(0) => break,
                Ok(n) => self.clients[index]
                    .stream
                    .extend_from_slice(&self.buffer[..n]),
                // The next packet needs more room than a maximum-size one: grow and retry.
                Err(crate::codec::EncodeError::InsufficientSize { required }) => {
                    self.buffer.resize(required, 0);
                }
                Err(e) => panic!("poll_transmit failed: {e}"),
            }
        }
        let client = &mut self.clients[index];
        let mut used = 0;
        while let Ok((packet, n)) = decode(&client.stream[used..], client.version, usize::MAX) {
            let mut received = Received::from_packet(&packet);
            if let Received::Publish {
                topic,
                topic_alias: Some(alias),
                ..
            } = &mut received
            {
                if topic.is_empty() {
                    *topic = client.aliases.get(alias).cloned().unwrap_or_default();
                } else {
                    client.aliases.insert(*alias, topic.clone());
                }
            }
            client.inbox.push_back(received);
            used += n;
        }
        client.stream.drain(..used);
    }

    /// The client's connection breaks without DISCONNECT (network loss, kill -9).
    pub fn drop_connection(&mut self, client: ClientHandle) {
        if let Some(connection) = self.clients[client.0].connection.take() {
            self.broker.handle_disconnect(connection, self.now);
            self.pump();
        }
    }

    /// Everything the client received since the last call.
    pub fn received(&mut self, client: ClientHandle) -> Vec<Received> {
        self.clients[client.0].inbox.drain(..).collect()
    }

    /// Whether the broker still holds the client's connection open.
    pub fn is_connected(&self, client: ClientHandle) -> bool {
        self.clients[client.0].connection.is_some()
    }

    /// Why the broker closed the client's connection, if it did.
    pub fn closed_reason(&self, client: ClientHandle) -> Option<ReasonCode> {
        self.clients[client.0].closed
    }

    /// Moves virtual time forward by `by`, stopping at each deadline the broker asks for.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..100_000 {
            match self.broker.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.broker.handle_timeout(self.now);
                    self.pump();
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("poll_timeout keeps returning a deadline that handle_timeout does not clear");
    }

    /// A fresh packet identifier for the client's own packets.
    pub fn packet_id(&mut self, client: ClientHandle) -> PacketId {
        let c = &mut self.clients[client.0];
        c.next_packet_id = c.next_packet_id.wrapping_add(1).max(1);
        PacketId::new(c.next_packet_id).unwrap_or(PacketId::MIN)
    }

    /// Subscribes to one filter and takes the SUBACK; returns its reason code.
    pub fn subscribe(&mut self, client: ClientHandle, filter: &str, qos: QoS) -> ReasonCode {
        self.subscribe_with(client, filter, SubscriptionOptions::qos(qos), None)
    }

    /// Subscribes with full options and an optional subscription identifier.
    pub fn subscribe_with(
        &mut self,
        client: ClientHandle,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> ReasonCode {
        let packet_id = self.packet_id(client);
        let subs = [Subscription::new(filter, options)];
        let props: Vec<Property<'_>> = identifier
            .map(Property::SubscriptionIdentifier)
            .into_iter()
            .collect();
        self.send(
            client,
            &Packet::Subscribe(Subscribe {
                packet_id,
                properties: List::new(&props),
                subscriptions: List::new(&subs),
            }),
        );
        let mut code = ReasonCode::UnspecifiedError;
        let inbox = &mut self.clients[client.0].inbox;
        if let Some(i) = inbox
            .iter()
            .position(|r| matches!(r, Received::SubAck(id, _) if *id == packet_id))
            && let Some(Received::SubAck(_, codes)) = inbox.remove(i)
        {
            code = codes.first().copied().unwrap_or(code);
        }
        code
    }

    /// Unsubscribes from one filter and takes the UNSUBACK.
    pub fn unsubscribe(&mut self, client: ClientHandle, filter: &str) -> Vec<ReasonCode> {
        let packet_id = self.packet_id(client);
        let filters = [filter];
        self.send(
            client,
            &Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: Properties::empty(),
                filters: List::new(&filters),
            }),
        );
        let inbox = &mut self.clients[client.0].inbox;
        match inbox
            .iter()
            .position(|r| matches!(r, Received::UnsubAck(id, _) if *id == packet_id))
        {
            Some(i) => match inbox.remove(i) {
                Some(Received::UnsubAck(_, codes)) => codes,
                _ => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    /// Publishes; QoS 1 and 2 get a packet identifier, their acknowledgments stay in the
    /// inbox. Returns the packet identifier used.
    pub fn publish(
        &mut self,
        client: ClientHandle,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Option<PacketId> {
        self.publish_with(client, topic, payload, qos, retain, Properties::empty())
    }

    /// Publishes with 5.0 properties.
    pub fn publish_with(
        &mut self,
        client: ClientHandle,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: Properties<'_>,
    ) -> Option<PacketId> {
        let (qos_pid, id) = match qos {
            QoS::AtMostOnce => (QoSPid::AtMostOnce, None),
            QoS::AtLeastOnce => {
                let id = self.packet_id(client);
                (QoSPid::AtLeastOnce(id), Some(id))
            }
            QoS::ExactlyOnce => {
                let id = self.packet_id(client);
                (QoSPid::ExactlyOnce(id), Some(id))
            }
        };
        self.send(
            client,
            &Packet::Publish(Publish {
                dup: false,
                qos_pid,
                retain,
                topic,
                properties,
                payload,
            }),
        );
        id
    }

    /// Sends the acknowledgment a well-behaved client sends for a received packet
    /// (PUBACK for QoS 1, PUBREC for QoS 2, PUBCOMP for PUBREL).
    pub fn acknowledge(&mut self, client: ClientHandle, received: &Received) {
        let packet = match received {
            Received::Publish {
                qos: QoS::AtLeastOnce,
                packet_id: Some(id),
                ..
            } => Packet::PubAck(Ack::new(*id)),
            Received::Publish {
                qos: QoS::ExactlyOnce,
                packet_id: Some(id),
                ..
            } => Packet::PubRec(Ack::new(*id)),
            Received::PubRel(id, _) => Packet::PubComp(Ack::new(*id)),
            Received::PubRec(id, _) => Packet::PubRel(Ack::new(*id)),
            _ => return,
        };
        self.send(client, &packet);
    }

    /// Sends DISCONNECT with `reason` (a normal disconnection for `Success`).
    pub fn disconnect(&mut self, client: ClientHandle, reason: ReasonCode) {
        self.send(client, &Packet::Disconnect(Disconnect::new(reason)));
    }
}

/// A CONNECT with the given basics and nothing else.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean: bool,
    keep_alive: u16,
) -> Connect<'_> {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive,
        properties: Properties::empty(),
        client_id,
        will: None,
        username: None,
        password: None,
    }
}

/// A will with no properties.
pub fn will<'a>(topic: &'a str, payload: &'a [u8], qos: QoS, retain: bool) -> Will<'a> {
    Will {
        qos,
        retain,
        properties: Properties::empty(),
        topic,
        payload,
    }
}
