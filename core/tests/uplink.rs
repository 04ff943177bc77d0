//! The bridge uplink's MQTT client ([`Uplink`]) against a broker with local devices
//! ([`Sim`]) and a scripted upstream: what the uplink writes is decoded as an upstream
//! broker would, and upstream's answers are encoded and fed back, in virtual time.
#![cfg(feature = "alloc")]

use fulmar_core::broker::{BrokerStorage, Config as BrokerConfig, Growable};
use fulmar_core::codec::{
    Ack, ConnAck, Disconnect, List, Packet, PacketId, PacketType, Properties, Property,
    ProtocolVersion, Publish, QoS, QoSPid, ReasonCode, SubAck, decode,
};
use fulmar_core::sim::{ClientHandle, Received, Sim};
use fulmar_core::time::{Duration, Instant};
use fulmar_core::uplink::{
    CLOSES_BEFORE_DROP, CONNACK_TIMEOUT, Close, Closed, Config, Event, Uplink,
};

/// A packet the uplink wrote upstream, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Up {
    Connect {
        client_id: String,
        clean_start: bool,
        keep_alive: u16,
        username: Option<String>,
        password: Option<Vec<u8>>,
        session_expiry: Option<u32>,
    },
    Subscribe {
        id: PacketId,
        /// Filter, QoS, No Local.
        filters: Vec<(String, QoS, bool)>,
    },
    Publish(Sent),
    PubAck(PacketId),
    PubRel(PacketId),
    /// A PUBREL with a failure reason (5.0).
    PubRelRefused(PacketId, ReasonCode),
    PingReq,
    Disconnect(ReasonCode),
}

/// A PUBLISH the uplink wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    id: Option<PacketId>,
    dup: bool,
    retain: bool,
    expiry: Option<u32>,
    user_properties: Vec<(String, String)>,
}

impl Up {
    fn from_packet(packet: &Packet<'_>) -> Self {
        match packet {
            Packet::Connect(connect) => {
                let c = connect.get();
                Self::Connect {
                    client_id: c.client_id.to_owned(),
                    clean_start: c.clean_start,
                    keep_alive: c.keep_alive,
                    username: c.username.map(str::to_owned),
                    password: c.password.map(<[u8]>::to_vec),
                    session_expiry: c.properties.session_expiry_interval(),
                }
            }
            Packet::Subscribe(s) => Self::Subscribe {
                id: s.packet_id,
                filters: s
                    .subscriptions
                    .iter()
                    .map(|s| (s.filter.to_owned(), s.options.qos, s.options.no_local))
                    .collect(),
            },
            Packet::Publish(p) => Self::Publish(Sent {
                topic: p.topic.to_owned(),
                payload: p.payload.to_vec(),
                qos: p.qos_pid.qos(),
                id: match p.qos_pid {
                    QoSPid::AtMostOnce => None,
                    QoSPid::AtLeastOnce(id) | QoSPid::ExactlyOnce(id) => Some(id),
                },
                dup: p.dup,
                retain: p.retain,
                expiry: p.properties.message_expiry_interval(),
                user_properties: p
                    .properties
                    .user_properties()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }),
            Packet::PubAck(a) => Self::PubAck(a.packet_id),
            Packet::PubRel(a) if a.reason_code != ReasonCode::Success => {
                Self::PubRelRefused(a.packet_id, a.reason_code)
            }
            Packet::PubRel(a) => Self::PubRel(a.packet_id),
            Packet::PingReq => Self::PingReq,
            Packet::Disconnect(d) => Self::Disconnect(d.reason_code),
            other => panic!("an uplink does not send {other:?}"),
        }
    }

    fn publish(&self) -> &Sent {
        match self {
            Self::Publish(sent) => sent,
            other => panic!("not a PUBLISH: {other:?}"),
        }
    }
}

/// A broker with a device publishing on it, its uplink, and upstream's side of the
/// connection.
struct Rig<S: BrokerStorage = Growable> {
    sim: Sim<S>,
    uplink: Uplink<'static>,
    device: ClientHandle,
    version: ProtocolVersion,
}

fn new_rig(config: &'static str) -> Rig {
    rig_on(BrokerConfig::default(), config)
}

fn rig_on<S: BrokerStorage>(broker: BrokerConfig, config: &'static str) -> Rig<S> {
    // The uplink borrows its configuration for as long as it runs.
    let config = Box::leak(Box::new(
        Config::parse(config).expect("a valid configuration"),
    ));
    let mut sim = Sim::<S>::new(broker);
    let now = sim.now();
    let uplink = Uplink::open(&mut sim.broker, config, now).expect("the bridge opens");
    let version = uplink.config().protocol;
    let device = sim.connect(ProtocolVersion::V5, "device", true, 0);
    Rig {
        sim,
        uplink,
        device,
        version,
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn connack(code: ReasonCode, properties: &[Property<'_>]) -> Packet<'static> {
    // The properties are encoded at once (see `Rig::feed`): borrowed only here.
    let properties: &'static [Property<'static>] = Vec::leak(
        properties
            .iter()
            .map(|p| match *p {
                Property::ReceiveMaximum(v) => Property::ReceiveMaximum(v),
                Property::MaximumPacketSize(v) => Property::MaximumPacketSize(v),
                Property::ServerKeepAlive(v) => Property::ServerKeepAlive(v),
                ref other => panic!("not used here: {other:?}"),
            })
            .collect(),
    );
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: code,
        properties: Properties::new(properties),
    })
}

impl<S: BrokerStorage> Rig<S> {
    fn now(&self) -> Instant {
        self.sim.now()
    }

    /// Everything the uplink writes now, decoded by upstream.
    fn written(&mut self) -> Vec<Up> {
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 512 * 1024];
        let now = self.now();
        loop {
            match self
                .uplink
                .poll_transmit(&mut self.sim.broker, &mut buf, now)
            {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) => panic!("poll_transmit: {e}"),
            }
        }
        self.sim.pump();
        let mut packets = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (packet, n) = decode(&bytes[at..], self.version, usize::MAX)
                .expect("the uplink writes whole, valid packets");
            packets.push(Up::from_packet(&packet));
            at += n;
        }
        packets
    }

    /// Everything the uplink writes now, one packet at a time, each with whether it must
    /// wait for durability.
    fn written_with_durability(&mut self) -> Vec<(Up, bool)> {
        let mut buf = vec![0u8; 512 * 1024];
        let now = self.now();
        let mut packets = Vec::new();
        loop {
            let n = self
                .uplink
                .poll_transmit(&mut self.sim.broker, &mut buf, now)
                .expect("room for any packet");
            if n == 0 {
                return packets;
            }
            let (packet, _) = decode(&buf[..n], self.version, usize::MAX).expect("a packet");
            let waits = self.uplink.transmit_needs_durability();
            packets.push((Up::from_packet(&packet), waits));
        }
    }

    /// Upstream sends `packets`; returns what the uplink consumed or why it closes.
    fn feed(&mut self, packets: &[Packet<'_>]) -> Result<usize, Close> {
        let mut bytes = Vec::new();
        for packet in packets {
            bytes.extend(packet.to_vec(self.version).unwrap());
        }
        self.feed_bytes(&bytes)
    }

    fn feed_bytes(&mut self, bytes: &[u8]) -> Result<usize, Close> {
        let now = self.now();
        let mut used = 0;
        // As a host does: feed, write the acknowledgements, feed the rest.
        loop {
            let n = self
                .uplink
                .handle_bytes(&mut self.sim.broker, &bytes[used..], now)?;
            self.sim.pump();
            used += n;
            if n == 0 || used == bytes.len() {
                return Ok(used);
            }
        }
    }

    /// TCP up, CONNECT written, upstream accepts with `properties`; returns what the uplink
    /// writes next (SUBSCRIBE, PUBRELs, messages).
    fn connect(&mut self, properties: &[Property<'_>]) -> Vec<Up> {
        let now = self.now();
        self.uplink.on_connected(now);
        let connect = self.written();
        assert!(matches!(&connect[..], [Up::Connect { .. }]), "{connect:?}");
        // Nothing else before the CONNACK.
        assert_eq!(self.written(), []);
        self.feed(&[connack(ReasonCode::Success, properties)])
            .unwrap();
        assert!(self.uplink.is_up());
        assert!(matches!(
            self.uplink.poll_event(),
            Some(Event::Connected { .. })
        ));
        self.written()
    }

    /// Upstream says nothing: timers fire on time (the uplink's pings written) until the
    /// uplink gives up; returns why, and what it wrote meanwhile.
    fn silence(&mut self) -> (Close, Vec<Up>) {
        let mut written = Vec::new();
        for _ in 0..100 {
            let at = self.uplink.poll_timeout().expect("a timer while connected");
            let by = at.saturating_since(self.now());
            self.sim.advance(by);
            match self.uplink.handle_timeout(at) {
                Ok(()) => written.extend(self.written()),
                Err(close) => return (close, written),
            }
        }
        panic!("the uplink never gives up");
    }

    fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) {
        let device = self.device;
        self.sim.publish(device, topic, payload, qos, false);
    }

    fn close(&mut self) -> Closed {
        let closed = self.uplink.on_closed(&mut self.sim.broker);
        self.sim.pump();
        closed
    }

    fn backlog(&self) -> usize {
        self.sim.broker.bridge_backlog(self.uplink.bridge())
    }

    fn dropped(&self) -> u32 {
        self.sim.broker.bridge_dropped(self.uplink.bridge())
    }
}

fn puback(n: u16) -> Packet<'static> {
    Packet::PubAck(Ack::new(id(n)))
}

fn payloads(up: &[Up]) -> Vec<Vec<u8>> {
    up.iter().map(|p| p.publish().payload.clone()).collect()
}

#[test]
fn connect_is_clean_session_0_with_the_settings_then_subscribes_down() {
    let mut rig = new_rig(
        "upstream h:1; client-id edge-7; keep-alive 20; username u; password p\n\
         down commands/# 2\ndown status 0",
    );
    let now = rig.now();
    rig.uplink.on_connected(now);
    assert_eq!(
        rig.written(),
        [Up::Connect {
            client_id: "edge-7".into(),
            clean_start: false,
            keep_alive: 20,
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
            session_expiry: None,
        }]
    );
    rig.feed(&[connack(ReasonCode::Success, &[])]).unwrap();
    // QoS 1 at most; 3.1.1 has no No Local.
    let written = rig.written();
    let [Up::Subscribe { filters, .. }] = &written[..] else {
        panic!("{written:?}");
    };
    assert_eq!(
        filters,
        &[
            ("commands/#".into(), QoS::AtLeastOnce, false),
            ("status".into(), QoS::AtMostOnce, false)
        ]
    );
    // A refused subscription is worth a line; nothing closes.
    let suback = Packet::SubAck(SubAck {
        packet_id: id(1),
        properties: Properties::empty(),
        reason_codes: List::new(&[ReasonCode::NotAuthorized, ReasonCode::Success]),
    });
    rig.feed(&[suback]).unwrap();
    assert_eq!(
        rig.uplink.poll_event(),
        Some(Event::Connected {
            session_present: false
        })
    );
    // 3.1.1 has one failure code (0x80).
    assert_eq!(
        rig.uplink.poll_event(),
        Some(Event::SubscriptionRefused(ReasonCode::UnspecifiedError))
    );
    assert_eq!(rig.uplink.poll_event(), None);
}

#[test]
fn v5_connect_keeps_the_session_and_subscribes_no_local() {
    let mut rig = new_rig("upstream h:1; protocol 5; password alone; down c/# 1");
    let now = rig.now();
    rig.uplink.on_connected(now);
    let written = rig.written();
    let [
        Up::Connect {
            session_expiry,
            password,
            ..
        },
    ] = &written[..]
    else {
        panic!("{written:?}");
    };
    // Never expires [MQTT-3.1.2-23]; no password without a user name.
    assert_eq!((*session_expiry, password.clone()), (Some(u32::MAX), None));
    rig.feed(&[connack(ReasonCode::Success, &[])]).unwrap();
    let written = rig.written();
    assert!(
        matches!(&written[..], [Up::Subscribe { filters, .. }] if filters[0].2),
        "{written:?}"
    );
}

#[test]
fn refused_connect_closes_with_the_reason_and_nothing_is_sent() {
    let mut rig = new_rig("upstream h:1; protocol 5; up s/# 1");
    rig.publish("s/1", b"a", QoS::AtLeastOnce);
    let now = rig.now();
    rig.uplink.on_connected(now);
    rig.written();
    assert_eq!(
        rig.feed(&[connack(ReasonCode::NotAuthorized, &[])]),
        Err(Close::Refused(ReasonCode::NotAuthorized))
    );
    assert!(!rig.uplink.is_up());
    assert_eq!(rig.written(), []);
    assert!(!rig.close().was_up);
    assert_eq!(rig.backlog(), 1);
}

#[test]
fn qos1_messages_go_in_order_and_leave_the_bridge_at_puback() {
    let mut rig = new_rig("upstream h:1; up sensors/# 1");
    for i in 0..3u8 {
        rig.publish("sensors/t", &[i], QoS::AtLeastOnce);
    }
    rig.publish("other", b"x", QoS::AtLeastOnce);
    let written = rig.connect(&[]);
    assert_eq!(payloads(&written), [[0], [1], [2]]);
    let ids: Vec<_> = written.iter().map(|p| p.publish().id.unwrap()).collect();
    assert!(
        written
            .iter()
            .all(|p| p.publish().qos == QoS::AtLeastOnce && !p.publish().dup)
    );
    assert_eq!(rig.backlog(), 3);
    // Acknowledged out of order: each is forgotten all the same.
    rig.feed(&[Packet::PubAck(Ack::new(ids[1]))]).unwrap();
    assert_eq!(rig.backlog(), 2);
    rig.feed(&[
        Packet::PubAck(Ack::new(ids[0])),
        Packet::PubAck(Ack::new(ids[2])),
    ])
    .unwrap();
    assert_eq!(rig.backlog(), 0);
    assert_eq!(rig.uplink.in_flight(), 0);
    // An acknowledgement for nothing in flight changes nothing.
    rig.feed(&[puback(999)]).unwrap();
    // QoS 0 leaves as soon as it is written.
    rig.publish("sensors/q0", b"z", QoS::AtMostOnce);
    let written = rig.written();
    assert_eq!(written[0].publish().qos, QoS::AtMostOnce);
    assert_eq!(rig.backlog(), 0);
}

#[test]
fn the_window_bounds_messages_in_flight() {
    let mut rig = new_rig("upstream h:1; up s/# 1");
    for i in 0..6u8 {
        rig.publish("s/t", &[i], QoS::AtLeastOnce);
    }
    let written = rig.connect(&[]);
    assert_eq!(payloads(&written), [[0], [1], [2], [3]]);
    assert_eq!(rig.written(), []);
    let first = written[0].publish().id.unwrap();
    rig.feed(&[Packet::PubAck(Ack::new(first))]).unwrap();
    assert_eq!(payloads(&rig.written()), [[4]]);

    // A 5.0 upstream's Receive Maximum bounds it further [MQTT-3.3.4-9].
    let mut rig = rig_v5_with(6);
    let written = rig.connect(&[Property::ReceiveMaximum(2)]);
    assert_eq!(payloads(&written), [[0], [1]]);
    assert_eq!(rig.written(), []);
}

fn rig_v5_with(messages: u8) -> Rig {
    let mut rig = new_rig("upstream h:1; protocol 5; up s/# 1");
    for i in 0..messages {
        rig.publish("s/t", &[i], QoS::AtLeastOnce);
    }
    rig
}

#[test]
fn after_a_close_unacknowledged_messages_go_again_first_with_dup_and_their_ids() {
    let mut rig = new_rig("upstream h:1; up s/# 1");
    for i in 0..3u8 {
        rig.publish("s/t", &[i], QoS::AtLeastOnce);
    }
    let first = rig.connect(&[]);
    rig.feed(&[Packet::PubAck(Ack::new(first[0].publish().id.unwrap()))])
        .unwrap();
    assert!(rig.close().was_up);
    rig.publish("s/t", &[3], QoS::AtLeastOnce);
    let again = rig.connect(&[]);
    assert_eq!(payloads(&again), [[1], [2], [3]]);
    for (before, now) in first[1..].iter().zip(&again) {
        assert_eq!(now.publish().id, before.publish().id);
        assert!(now.publish().dup);
    }
    assert!(!again[2].publish().dup);
}

#[test]
fn qos2_is_released_at_pubrec_and_its_pubrel_goes_again_after_a_reconnection() {
    let mut rig = new_rig("upstream h:1; up s/# 2");
    rig.publish("s/t", b"once", QoS::ExactlyOnce);
    let written = rig.connect(&[]);
    let sent = written[0].publish().clone();
    assert_eq!(sent.qos, QoS::ExactlyOnce);
    let pid = sent.id.unwrap();
    rig.feed(&[Packet::PubRec(Ack::new(pid))]).unwrap();
    assert_eq!(rig.written(), [Up::PubRel(pid)]);
    // The connection ends before PUBCOMP: the message is not sent again, its PUBREL is
    // [MQTT-4.4.0-1].
    rig.close();
    let again = rig.connect(&[]);
    assert_eq!(again, [Up::PubRel(pid)]);
    assert_eq!(rig.uplink.in_flight(), 1);
    rig.feed(&[Packet::PubComp(Ack::new(pid))]).unwrap();
    assert_eq!(rig.backlog(), 0);
    assert_eq!(rig.uplink.in_flight(), 0);
}

/// `answer` about packet identifier `pid` instead.
fn answer_for(answer: &Up, pid: PacketId) -> Up {
    match answer {
        Up::PubRelRefused(_, code) => Up::PubRelRefused(pid, *code),
        _ => Up::PubRel(pid),
    }
}

#[test]
fn a_pubrec_about_no_message_in_flight_is_answered_with_pubrel() {
    // Upstream must not be left waiting for a release of an identifier the uplink will
    // use again (§4.3.3): 5.0 answers "Packet Identifier not found" (§3.6.2.1), 3.1.1 a
    // plain PUBREL.
    for (config, answer) in [
        (
            "upstream h:1; protocol 5; up s/# 2",
            Up::PubRelRefused(id(7), ReasonCode::PacketIdentifierNotFound),
        ),
        ("upstream h:1; up s/# 2", Up::PubRel(id(7))),
    ] {
        let mut rig = new_rig(config);
        rig.publish("s/t", b"once", QoS::ExactlyOnce);
        let pid = rig.connect(&[])[0].publish().id.unwrap();
        assert_ne!(pid, id(7));
        rig.feed(&[Packet::PubRec(Ack::new(pid))]).unwrap();
        assert_eq!(rig.written(), [Up::PubRel(pid)]);
        rig.feed(&[Packet::PubComp(Ack::new(pid))]).unwrap();
        // Once more, after the exchange is over.
        rig.feed(&[Packet::PubRec(Ack::new(pid))]).unwrap();
        assert_eq!(rig.written(), [answer_for(&answer, pid)], "{config}");
        rig.feed(&[Packet::PubRec(Ack::new(id(7)))]).unwrap();
        assert_eq!(rig.written(), [answer], "{config}");
        assert_eq!(rig.uplink.in_flight(), 0);
    }
}

#[test]
fn a_qos2_message_refused_at_pubrec_is_released() {
    let mut rig = new_rig("upstream h:1; protocol 5; up s/# 2");
    rig.publish("s/t", b"no", QoS::ExactlyOnce);
    let pid = rig.connect(&[])[0].publish().id.unwrap();
    let refusal = Ack {
        reason_code: ReasonCode::QuotaExceeded,
        ..Ack::new(pid)
    };
    rig.feed(&[Packet::PubRec(refusal)]).unwrap();
    assert_eq!(rig.written(), []);
    assert_eq!(rig.backlog(), 0);
    assert_eq!(
        rig.uplink.poll_event(),
        Some(Event::MessagesRefused {
            count: 1,
            reason: ReasonCode::QuotaExceeded
        })
    );
}

#[test]
fn v5_forwards_kept_properties_and_the_expiry_left() {
    let mut rig = new_rig("upstream h:1; protocol 5; up s/# 1");
    let device = rig.device;
    let properties = [
        Property::UserProperty("site", "north"),
        Property::MessageExpiryInterval(100),
    ];
    rig.sim.publish_with(
        device,
        "s/t",
        b"x",
        QoS::AtLeastOnce,
        false,
        Properties::new(&properties),
    );
    rig.sim.advance(Duration::from_secs(30));
    let written = rig.connect(&[]);
    let sent = written[0].publish();
    assert_eq!(
        sent.user_properties,
        [("site".to_owned(), "north".to_owned())]
    );
    assert_eq!(sent.expiry, Some(70));
}

#[test]
fn messages_larger_than_upstreams_maximum_packet_size_are_dropped_and_counted() {
    let mut rig = new_rig("upstream h:1; protocol 5; up s/# 1");
    rig.publish("s/big", &[7; 300], QoS::AtLeastOnce);
    rig.publish("s/small", b"ok", QoS::AtLeastOnce);
    // [MQTT-3.1.2-24]
    let written = rig.connect(&[Property::MaximumPacketSize(128)]);
    assert_eq!(payloads(&written), [b"ok".to_vec()]);
    assert_eq!(rig.dropped(), 1);
    assert_eq!(
        rig.uplink.poll_event(),
        Some(Event::Oversized {
            count: 1,
            max_packet: 128
        })
    );
    // The count is shown to local subscribers, retained.
    let now = rig.now();
    assert_eq!(rig.uplink.poll_dropped(&mut rig.sim.broker, now), Some(1));
    assert_eq!(rig.uplink.poll_dropped(&mut rig.sim.broker, now), None);
    let watcher = rig.sim.connect(ProtocolVersion::V5, "watcher", true, 0);
    rig.sim.subscribe(
        watcher,
        "$SYS/broker/bridge/fulmar-uplink/dropped",
        QoS::AtMostOnce,
    );
    let got = rig.sim.received(watcher);
    assert!(
        got.iter().any(
            |r| matches!(r, Received::Publish { payload, retain: true, .. } if payload == b"1")
        ),
        "{got:?}"
    );
}

#[test]
fn max_packet_setting_drops_for_a_311_upstream() {
    let mut rig = new_rig("upstream h:1; max-packet 64; up s/# 1");
    rig.publish("s/big", &[7; 100], QoS::AtMostOnce);
    rig.publish("s/small", b"ok", QoS::AtLeastOnce);
    let written = rig.connect(&[]);
    assert_eq!(payloads(&written), [b"ok".to_vec()]);
    assert_eq!(rig.dropped(), 1);
    assert_eq!(rig.uplink.max_packet(), 64);
}

#[test]
fn a_stopping_host_says_disconnect_last_and_the_session_keeps_what_was_in_flight() {
    let mut rig = new_rig("upstream h:1; protocol 5; up s/# 1");
    rig.publish("s/t", b"a", QoS::AtLeastOnce);
    let first = rig.connect(&[]);
    assert_eq!(payloads(&first), [b"a".to_vec()]);
    rig.publish("s/t", b"b", QoS::AtLeastOnce);
    // [MQTT-3.14.4-1]: DISCONNECT (5.0 Normal disconnection: the session stays) and
    // nothing after it, not even the message waiting.
    rig.uplink.disconnect();
    assert_eq!(rig.written(), [Up::Disconnect(ReasonCode::Success)]);
    assert_eq!(rig.written(), []);
    rig.close();
    // Next start: what upstream did not acknowledge goes again, in order.
    let again = rig.connect(&[]);
    assert_eq!(payloads(&again), [b"a".to_vec(), b"b".to_vec()]);
    assert!(again[0].publish().dup);
    // Not counted as upstream's closing: three stops never drop the oldest message.
    for _ in 0..CLOSES_BEFORE_DROP {
        rig.uplink.disconnect();
        assert_eq!(rig.written(), [Up::Disconnect(ReasonCode::Success)]);
        rig.close();
        rig.connect(&[]);
    }
    assert_eq!(rig.dropped(), 0);
    assert_eq!(rig.backlog(), 2);
    // Before the CONNECT went there is nothing to say.
    rig.close();
    let now = rig.now();
    rig.uplink.on_connected(now);
    rig.uplink.disconnect();
    assert_eq!(rig.written(), []);
}

#[test]
fn a_message_upstream_closes_on_three_times_in_a_row_is_dropped() {
    let mut rig = new_rig("upstream h:1; up s/# 1");
    rig.publish("s/t", b"refused", QoS::AtLeastOnce);
    for attempt in 1..=CLOSES_BEFORE_DROP {
        let written = rig.connect(&[]);
        assert_eq!(payloads(&written), [b"refused".to_vec()]);
        // Upstream closes the socket.
        let closed = rig.close();
        assert!(closed.was_up);
        assert_eq!(closed.dropped_refused, attempt == CLOSES_BEFORE_DROP);
    }
    assert_eq!(rig.dropped(), 1);
    assert_eq!(rig.backlog(), 0);
    rig.publish("s/t", b"next", QoS::AtLeastOnce);
    assert_eq!(payloads(&rig.connect(&[])), [b"next".to_vec()]);
}

#[test]
fn closes_this_side_decided_or_with_another_oldest_message_start_the_count_over() {
    let mut rig = new_rig("upstream h:1; keep-alive 4; up s/# 1");
    rig.publish("s/t", b"m", QoS::AtLeastOnce);
    for _ in 1..CLOSES_BEFORE_DROP {
        rig.connect(&[]);
        assert!(!rig.close().dropped_refused);
    }
    // The link times out: this side's decision, not upstream refusing the message.
    rig.connect(&[]);
    assert_eq!(rig.silence().0, Close::Timeout);
    assert!(!rig.close().dropped_refused);
    // Counting starts over: two more closes by upstream are not three in a row.
    for _ in 1..CLOSES_BEFORE_DROP {
        rig.connect(&[]);
        assert!(!rig.close().dropped_refused);
    }
    // Nor is a close before CONNACK (not an accepted connection) counted.
    let now = rig.now();
    rig.uplink.on_connected(now);
    rig.written();
    assert!(!rig.close().was_up);
    rig.connect(&[]);
    assert!(rig.close().dropped_refused);
    assert_eq!(rig.dropped(), 1);
    // Aborted by the host: not counted either.
    rig.publish("s/t", b"n", QoS::AtLeastOnce);
    for _ in 0..CLOSES_BEFORE_DROP {
        rig.connect(&[]);
        rig.uplink.abort();
        assert!(!rig.close().dropped_refused);
    }
    assert_eq!(rig.backlog(), 1);
}

#[test]
fn a_qos2_message_upstream_received_is_never_taken_for_one_it_refuses() {
    let mut rig = new_rig("upstream h:1; up s/# 2");
    rig.publish("s/t", b"had", QoS::ExactlyOnce);
    let pid = rig.connect(&[])[0].publish().id.unwrap();
    rig.feed(&[Packet::PubRec(Ack::new(pid))]).unwrap();
    rig.written();
    // Upstream has it (PUBREC): however often it closes before PUBCOMP, the PUBREL goes
    // again and the message is not dropped.
    for _ in 0..CLOSES_BEFORE_DROP + 1 {
        assert!(!rig.close().dropped_refused);
        assert_eq!(rig.connect(&[]), [Up::PubRel(pid)]);
    }
    assert_eq!(rig.dropped(), 0);
}

#[test]
fn upstreams_disconnect_counts_as_upstream_closing() {
    let mut rig = new_rig("upstream h:1; protocol 5; up s/# 1");
    rig.publish("s/t", b"m", QoS::AtLeastOnce);
    for attempt in 1..=CLOSES_BEFORE_DROP {
        rig.connect(&[]);
        let disconnect = Packet::Disconnect(Disconnect::new(ReasonCode::PacketTooLarge));
        assert_eq!(
            rig.feed(&[disconnect]),
            Err(Close::Disconnected(ReasonCode::PacketTooLarge))
        );
        assert_eq!(rig.close().dropped_refused, attempt == CLOSES_BEFORE_DROP);
    }
    assert_eq!(rig.backlog(), 0);
}

#[test]
fn qos1_from_upstream_is_acknowledged_once_the_broker_took_it() {
    let mut rig = new_rig("upstream h:1; down cmd/# 1");
    let local = rig.sim.connect(ProtocolVersion::V5, "local", true, 0);
    rig.sim.subscribe(local, "cmd/#", QoS::AtLeastOnce);
    rig.connect(&[]);
    let publish = |n: u16, qos_pid| {
        Packet::Publish(Publish {
            dup: false,
            qos_pid,
            retain: false,
            topic: "cmd/valve",
            properties: Properties::empty(),
            payload: b"open",
        })
        .to_vec(ProtocolVersion::V3_1_1)
        .map(|b| (n, b))
        .unwrap()
    };
    let (_, one) = publish(5, QoSPid::AtLeastOnce(id(5)));
    let (_, zero) = publish(0, QoSPid::AtMostOnce);
    rig.feed_bytes(&[one, zero].concat()).unwrap();
    assert_eq!(rig.written(), [Up::PubAck(id(5))]);
    let got = rig.sim.received(local);
    assert_eq!(
        got.iter()
            .filter(|r| matches!(r, Received::Publish { .. }))
            .count(),
        2,
        "{got:?}"
    );
    // More QoS 1 messages in one read than acknowledgements wait: all are taken and
    // acknowledged, in order.
    let burst: Vec<u8> = (10..20)
        .flat_map(|n| publish(n, QoSPid::AtLeastOnce(id(n))).1)
        .collect();
    let now = rig.now();
    let mut used = 0;
    let mut acks = Vec::new();
    while used < burst.len() {
        let n = rig
            .uplink
            .handle_bytes(&mut rig.sim.broker, &burst[used..], now)
            .unwrap();
        assert!(n > 0);
        used += n;
        acks.extend(rig.written());
    }
    assert_eq!(
        acks,
        (10..20).map(|n| Up::PubAck(id(n))).collect::<Vec<_>>()
    );
}

/// What a crash must not take back waits for durability before upstream sees it: the
/// PUBACK of a message from upstream, a PUBREL, a QoS 2 PUBLISH (its packet identifier).
/// A QoS 1 PUBLISH, the CONNECT, the SUBSCRIBE do not.
#[test]
fn what_upstream_must_not_see_twice_waits_for_durability() {
    let mut rig = new_rig("upstream h:1; up s/# 2; down cmd/# 1");
    rig.publish("s/one", b"1", QoS::AtLeastOnce);
    rig.publish("s/two", b"2", QoS::ExactlyOnce);
    let now = rig.now();
    rig.uplink.on_connected(now);
    let connect = rig.written_with_durability();
    assert!(
        matches!(&connect[..], [(Up::Connect { .. }, false)]),
        "{connect:?}"
    );
    rig.feed(&[connack(ReasonCode::Success, &[])]).unwrap();
    let written = rig.written_with_durability();
    let waits: Vec<bool> = written.iter().map(|(_, w)| *w).collect();
    assert!(matches!(written[0].0, Up::Subscribe { .. }), "{written:?}");
    assert_eq!(written[1].0.publish().qos, QoS::AtLeastOnce);
    assert_eq!(written[2].0.publish().qos, QoS::ExactlyOnce);
    assert_eq!(waits, [false, false, true]);
    let pid = written[2].0.publish().id.unwrap();
    rig.feed(&[Packet::PubRec(Ack::new(pid))]).unwrap();
    assert_eq!(rig.written_with_durability(), [(Up::PubRel(pid), true)]);
    let command = Packet::Publish(Publish {
        dup: false,
        qos_pid: QoSPid::AtLeastOnce(id(7)),
        retain: false,
        topic: "cmd/valve",
        properties: Properties::empty(),
        payload: b"open",
    });
    rig.feed(&[command]).unwrap();
    assert_eq!(rig.written_with_durability(), [(Up::PubAck(id(7)), true)]);
}

fulmar_core::fixed_broker_storage! {
    /// Room for four messages: a local subscriber that does not read fills it.
    struct Small {
        connections: 4, sessions: 4, subscriptions: 8, topic_nodes: 16,
        share_groups: 1, text: 32, messages: 4, queue: 16, controls: 16,
        inbound: 4, aliases: 2, retained: 2, blob_bytes: 2048, slots: 32,
    }
}

#[test]
fn a_qos1_message_the_broker_cannot_take_is_not_acknowledged_and_closes() {
    let mut rig = rig_on::<Small>(BrokerConfig::default(), "upstream h:1; down cmd/# 1");
    let local = rig.sim.connect(ProtocolVersion::V5, "local", false, 0);
    rig.sim.subscribe(local, "cmd/#", QoS::AtLeastOnce);
    rig.sim.stop_reading(local);
    rig.connect(&[]);
    let mut closed = None;
    for n in 1..=8u16 {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos_pid: QoSPid::AtLeastOnce(id(n)),
            retain: false,
            topic: "cmd/valve",
            properties: Properties::empty(),
            payload: b"open",
        });
        match rig.feed(&[publish]) {
            Ok(_) => assert_eq!(rig.written(), [Up::PubAck(id(n))]),
            Err(close) => {
                closed = Some((n, close));
                break;
            }
        }
    }
    let (n, close) = closed.expect("the broker fills up");
    assert_eq!(close, Close::LocalFull);
    // The refused one is not acknowledged: upstream sends it again after the
    // reconnection.
    assert!(!rig.written().contains(&Up::PubAck(id(n))));
}

#[test]
fn keep_alive_pings_after_a_quarter_and_gives_up_after_one_and_a_half() {
    let mut rig = new_rig("upstream h:1; keep-alive 8");
    rig.connect(&[]);
    let start = rig.now();
    assert_eq!(
        rig.uplink.poll_timeout(),
        Some(start + Duration::from_secs(2))
    );
    // Early: nothing.
    rig.uplink
        .handle_timeout(start + Duration::from_secs(1))
        .unwrap();
    assert_eq!(rig.written(), []);
    rig.sim.advance(Duration::from_secs(2));
    let now = rig.now();
    rig.uplink.handle_timeout(now).unwrap();
    assert_eq!(rig.written(), [Up::PingReq]);
    // Answered: silence counts again from the answer.
    rig.feed(&[Packet::PingResp]).unwrap();
    let heard = rig.now();
    let (close, written) = rig.silence();
    assert_eq!(close, Close::Timeout);
    assert_eq!(rig.now(), heard + Duration::from_secs(12));
    // Every 2 s after the last: at 2, 4, 6, 8 and 10 s.
    assert_eq!(written, vec![Up::PingReq; 5]);
}

#[test]
fn a_timer_fired_a_quarter_late_means_the_host_was_not_running() {
    let mut rig = new_rig("upstream h:1; keep-alive 8");
    rig.connect(&[]);
    let start = rig.now();
    // The ping was due at 2 s; the host runs again at 20 s (past 1.5 × 8 s of silence):
    // it pings instead of giving up, and the silence counts from now.
    let late = start + Duration::from_secs(20);
    rig.uplink.handle_timeout(late).unwrap();
    let mut buf = [0u8; 16];
    let n = rig
        .uplink
        .poll_transmit(&mut rig.sim.broker, &mut buf, late)
        .unwrap();
    assert_eq!(&buf[..n], [0xc0, 0]);
    // Timely from then on: nothing heard for 12 s after `late` ends the link.
    let dead = late + Duration::from_secs(12);
    let mut at = late;
    while let Some(next) = rig.uplink.poll_timeout() {
        assert!(next > at || next == dead);
        at = next;
        match rig.uplink.handle_timeout(at) {
            Ok(()) => {
                let _ = rig.uplink.poll_transmit(&mut rig.sim.broker, &mut buf, at);
            }
            Err(close) => {
                assert_eq!((close, at), (Close::Timeout, dead));
                return;
            }
        }
    }
    panic!("no timeout");
}

#[test]
fn a_5_0_upstreams_server_keep_alive_replaces_the_configured_one() {
    let mut rig = new_rig("upstream h:1; protocol 5; keep-alive 60");
    rig.connect(&[Property::ServerKeepAlive(4)]);
    let start = rig.now();
    // [MQTT-3.2.2-21]
    assert_eq!(
        rig.uplink.poll_timeout(),
        Some(start + Duration::from_secs(1))
    );
}

#[test]
fn no_connack_in_time_closes() {
    let mut rig = new_rig("upstream h:1");
    let now = rig.now();
    rig.uplink.on_connected(now);
    rig.written();
    assert_eq!(rig.uplink.poll_timeout(), Some(now + CONNACK_TIMEOUT));
    assert_eq!(
        rig.uplink.handle_timeout(now + CONNACK_TIMEOUT),
        Err(Close::Timeout)
    );
}

#[test]
fn bad_input_from_upstream_closes_with_the_reason() {
    // Not a packet: a reserved type.
    let mut rig = new_rig("upstream h:1; up s/# 1");
    rig.connect(&[]);
    assert!(matches!(
        rig.feed_bytes(&[0x00, 0x00]),
        Err(Close::Malformed(_))
    ));

    // Something else than CONNACK first [MQTT-3.2.0-1].
    let mut rig = new_rig("upstream h:1");
    let now = rig.now();
    rig.uplink.on_connected(now);
    rig.written();
    assert_eq!(
        rig.feed(&[Packet::PingResp]),
        Err(Close::Unexpected(PacketType::PingResp))
    );

    // QoS 2 on a QoS 1 subscription [MQTT-3.8.4-6].
    let mut rig = new_rig("upstream h:1; down c/# 2");
    rig.connect(&[]);
    let publish = Packet::Publish(Publish {
        dup: false,
        qos_pid: QoSPid::ExactlyOnce(id(3)),
        retain: false,
        topic: "c/x",
        properties: Properties::empty(),
        payload: b"",
    });
    assert_eq!(
        rig.feed(&[publish]),
        Err(Close::Unexpected(PacketType::Publish))
    );
    assert_eq!(rig.written(), []);

    // A packet only a server takes.
    let mut rig = new_rig("upstream h:1");
    rig.connect(&[]);
    assert_eq!(
        rig.feed(&[Packet::PingReq]),
        Err(Close::Unexpected(PacketType::PingReq))
    );

    // An incomplete packet is not an error: it waits for its end.
    let mut rig = new_rig("upstream h:1");
    rig.connect(&[]);
    assert_eq!(rig.feed_bytes(&[0xd0]), Ok(0));
    assert_eq!(rig.feed_bytes(&[0xd0, 0x00]), Ok(2));
}
