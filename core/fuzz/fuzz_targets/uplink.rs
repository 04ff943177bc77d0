//! Fuzzes the bridge uplink's MQTT client (`fulmar_core::uplink::Uplink`) with arbitrary
//! sequences of what its host and upstream can do: local messages for the bridge, TCP
//! connections opened and closed, well-formed upstream packets (CONNACK with any limits,
//! acknowledgements for any identifier, PUBLISH at any QoS, DISCONNECT) mixed with raw
//! bytes, and jumps in time, over a tiny fixed-capacity broker (every "full" path runs).
//!
//! Invariants checked after every operation:
//! - nothing panics (the uplink and the broker promise no panic on any input);
//! - what `poll_transmit` writes decodes as client packets in the configured version,
//!   CONNECT alone before the CONNACK, never more than the buffer nor, for a PUBLISH, more
//!   than the largest packet upstream takes; a buffer too small gets `InsufficientSize`
//!   asking for more than it has, and nothing is lost once grown;
//! - at most the window of messages is in flight;
//! - `poll_event` drains, and `handle_timeout(poll_timeout())` moves the deadline or ends
//!   the connection (no timer that never clears).

#![no_main]

use arbitrary::Arbitrary;
use fulmar_core::broker::Broker;
use fulmar_core::codec::{
    Ack, ConnAck, Disconnect, EncodeError, List, Packet, PacketId, Properties, Property,
    ProtocolVersion, Publish, QoS, QoSPid, ReasonCode, SubAck, decode,
};
use fulmar_core::time::{Duration, Instant};
use fulmar_core::uplink::{Config, DEFAULT_WINDOW, Uplink};
use fulmar_core_fuzz::host::{Tiny, config as broker_config};
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 4] = ["up/a", "up/b/c", "down/x", "other"];

#[derive(Arbitrary, Debug)]
enum Op {
    /// A local message (matching `up/#` or not) for the bridge.
    Local {
        topic: u8,
        qos: u8,
        len: u8,
    },
    /// TCP connected.
    Connected,
    /// The socket closed or failed (or the host aborted first).
    Closed {
        abort: bool,
    },
    ConnAck {
        code: u8,
        receive_maximum: u8,
        max_packet: u16,
        keep_alive: Option<u8>,
    },
    Ack {
        kind: u8,
        id: u8,
        failed: bool,
    },
    Publish {
        topic: u8,
        qos: u8,
        id: u8,
        len: u8,
    },
    SubAck {
        failed: bool,
    },
    Disconnect,
    PingResp,
    Raw {
        bytes: Vec<u8>,
    },
    Advance {
        millis: u16,
    },
    /// Upstream writes a single byte of its next packet only.
    Partial {
        byte: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    v5: bool,
    /// Small buffers exercise `InsufficientSize`.
    small_buffer: bool,
    ops: Vec<Op>,
}

/// The scripted host: a broker with an uplink, upstream's unread bytes, virtual time.
struct Host<'c> {
    broker: Broker<Tiny>,
    uplink: Uplink<'c>,
    version: ProtocolVersion,
    now: Instant,
    buf: Vec<u8>,
    /// Bytes from upstream the uplink did not consume yet.
    inbox: Vec<u8>,
    /// TCP connected (until a close).
    open: bool,
    /// The uplink wrote its CONNECT on this connection.
    connect_written: bool,
}

/// The uplink's configuration: 5.0 with upstream's limits from its CONNACK, or 3.1.1
/// with `max-packet`.
fn configuration(v5: bool) -> Config<'static> {
    let text = if v5 {
        "upstream h:1; client-id up; protocol 5; keep-alive 2; up up/# 2; down down/# 1"
    } else {
        "upstream h:1; client-id up; keep-alive 2; max-packet 96; up up/# 2; down down/# 1"
    };
    Config::parse(text).expect("a valid configuration")
}

impl<'c> Host<'c> {
    fn new(input: &Input, config: &'c Config<'c>) -> Self {
        let version = config.protocol;
        let mut broker = Broker::new(broker_config(), 7);
        let uplink = Uplink::open(&mut broker, config, Instant::ZERO).expect("the bridge opens");
        let size = if input.small_buffer { 24 } else { 4096 };
        Self {
            broker,
            uplink,
            version,
            now: Instant::ZERO,
            buf: vec![0; size],
            inbox: Vec::new(),
            open: false,
            connect_written: false,
        }
    }

    fn close(&mut self) {
        self.uplink.on_closed(&mut self.broker);
        self.open = false;
        self.inbox.clear();
    }

    /// Upstream sends `bytes`; the host feeds them as a real one does.
    fn feed(&mut self, bytes: &[u8]) {
        if !self.open {
            return;
        }
        self.inbox.extend_from_slice(bytes);
        for _ in 0..1000 {
            match self
                .uplink
                .handle_bytes(&mut self.broker, &self.inbox, self.now)
            {
                Ok(used) => {
                    assert!(used <= self.inbox.len());
                    self.inbox.drain(..used);
                    self.transmit();
                    if used == 0 || self.inbox.is_empty() {
                        return;
                    }
                }
                Err(_) => return self.close(),
            }
        }
        panic!("handle_bytes never stops consuming");
    }

    fn send(&mut self, packet: &Packet<'_>) {
        if let Ok(bytes) = packet.to_vec(self.version) {
            self.feed(&bytes);
        }
    }

    /// Takes what the uplink writes, growing the buffer when it asks, and checks it.
    fn transmit(&mut self) {
        let mut grown = false;
        for _ in 0..10_000 {
            match self
                .uplink
                .poll_transmit(&mut self.broker, &mut self.buf, self.now)
            {
                Ok(0) => return,
                Ok(n) => {
                    assert!(n <= self.buf.len());
                    assert!(self.open, "wrote {n} bytes with no connection");
                    self.check(n);
                    grown = false;
                }
                Err(EncodeError::InsufficientSize { required }) => {
                    assert!(!grown, "still InsufficientSize after growing to {required}");
                    assert!(required > self.buf.len());
                    self.buf.resize(required, 0);
                    grown = true;
                }
                Err(e) => panic!("poll_transmit failed: {e:?}"),
            }
            assert!(self.uplink.in_flight() <= DEFAULT_WINDOW);
        }
        panic!("poll_transmit never runs out");
    }

    /// One packet the uplink wrote: a client packet, CONNECT first and alone until the
    /// CONNACK, a PUBLISH no larger than upstream takes.
    fn check(&mut self, n: usize) {
        let (packet, used) = decode(&self.buf[..n], self.version, usize::MAX)
            .unwrap_or_else(|e| panic!("the uplink wrote bytes that do not decode: {e:?}"));
        assert_eq!(used, n, "one whole packet per write");
        match packet {
            Packet::Connect(_) => {
                assert!(!self.connect_written, "a second CONNECT");
                self.connect_written = true;
            }
            _ if !self.uplink.is_up() => panic!("{packet:?} before the CONNACK"),
            Packet::Publish(_) => {
                assert!(
                    n as u64 <= u64::from(self.uplink.max_packet()),
                    "PUBLISH over the limit"
                )
            }
            Packet::Subscribe(_) | Packet::PubAck(_) | Packet::PubRel(_) | Packet::PingReq => {}
            other => panic!("a client does not send {other:?}"),
        }
    }

    fn advance(&mut self, millis: u16) {
        self.now = self.now + Duration::from_millis(u64::from(millis));
        for _ in 0..1000 {
            let Some(at) = self.uplink.poll_timeout() else {
                return;
            };
            if at > self.now {
                return;
            }
            if self.uplink.handle_timeout(self.now).is_err() {
                return self.close();
            }
            self.transmit();
            if self.uplink.poll_timeout().is_some_and(|next| next <= at) {
                // A timer that did not move: the uplink must have something to write,
                // and writing it (done above) moves it.
                panic!("handle_timeout({at}) left the deadline at {at}");
            }
        }
    }
}

fn id(n: u8) -> PacketId {
    PacketId::new(u16::from(n) % 8 + 1).unwrap_or(PacketId::MIN)
}

fuzz_target!(|input: Input| {
    let config = configuration(input.v5);
    let mut host = Host::new(&input, &config);
    for op in input.ops.iter().take(256) {
        match op {
            Op::Local { topic, qos, len } => {
                let topic = TOPICS[usize::from(*topic) % TOPICS.len()];
                let qos = match qos % 3 {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                let payload = vec![0x5a; usize::from(*len)];
                let _ = host.broker.publish(topic, &payload, qos, false, host.now);
                host.transmit();
            }
            Op::Connected => {
                if host.open {
                    host.close();
                }
                host.uplink.on_connected(host.now);
                host.open = true;
                host.connect_written = false;
                host.transmit();
                assert!(host.connect_written, "no CONNECT after on_connected");
            }
            Op::Closed { abort } => {
                if *abort {
                    host.uplink.abort();
                }
                host.close();
            }
            Op::ConnAck {
                code,
                receive_maximum,
                max_packet,
                keep_alive,
            } => {
                let mut properties = Vec::new();
                if host.version == ProtocolVersion::V5 {
                    if *receive_maximum > 0 {
                        properties.push(Property::ReceiveMaximum(u16::from(*receive_maximum)));
                    }
                    if *max_packet > 0 {
                        properties.push(Property::MaximumPacketSize(u32::from(*max_packet)));
                    }
                    if let Some(seconds) = keep_alive {
                        properties.push(Property::ServerKeepAlive(u16::from(*seconds)));
                    }
                }
                let reason_code = if code % 4 == 0 {
                    ReasonCode::NotAuthorized
                } else {
                    ReasonCode::Success
                };
                host.send(&Packet::ConnAck(ConnAck {
                    session_present: code % 2 == 1,
                    reason_code,
                    properties: Properties::new(&properties),
                }));
            }
            Op::Ack {
                kind,
                id: n,
                failed,
            } => {
                let ack = Ack {
                    reason_code: if *failed && host.version == ProtocolVersion::V5 {
                        ReasonCode::QuotaExceeded
                    } else {
                        ReasonCode::Success
                    },
                    ..Ack::new(id(*n))
                };
                let packet = match kind % 3 {
                    0 => Packet::PubAck(ack),
                    1 => Packet::PubRec(ack),
                    _ => Packet::PubComp(ack),
                };
                host.send(&packet);
            }
            Op::Publish {
                topic,
                qos,
                id: n,
                len,
            } => {
                let qos_pid = match qos % 3 {
                    0 => QoSPid::AtMostOnce,
                    1 => QoSPid::AtLeastOnce(id(*n)),
                    _ => QoSPid::ExactlyOnce(id(*n)),
                };
                let payload = vec![0xa5; usize::from(*len)];
                host.send(&Packet::Publish(Publish {
                    dup: false,
                    qos_pid,
                    retain: false,
                    topic: TOPICS[usize::from(*topic) % TOPICS.len()],
                    properties: Properties::empty(),
                    payload: &payload,
                }));
            }
            Op::SubAck { failed } => {
                let code = if *failed {
                    ReasonCode::UnspecifiedError
                } else {
                    ReasonCode::GrantedQoS1
                };
                host.send(&Packet::SubAck(SubAck {
                    packet_id: PacketId::MIN,
                    properties: Properties::empty(),
                    reason_codes: List::new(&[code]),
                }));
            }
            Op::Disconnect => host.send(&Packet::Disconnect(Disconnect::new(
                ReasonCode::PacketTooLarge,
            ))),
            Op::PingResp => host.send(&Packet::PingResp),
            Op::Raw { bytes } => host.feed(bytes),
            Op::Advance { millis } => host.advance(*millis),
            Op::Partial { byte } => host.feed(&[*byte]),
        }
        for _ in 0..16 {
            if host.uplink.poll_event().is_none() {
                break;
            }
        }
        assert!(host.uplink.poll_event().is_none(), "events never drain");
    }
});
