//! Fuzzes `Broker::restore` with what a damaged, truncated or foreign store could hold,
//! then serves the restored sessions.
//!
//! Input: a list of records, each either well-formed in shape (a valid key, a value
//! encoded from the record types with arbitrary field values: QoS 7, state 9, packet
//! identifier 0, topics with wildcards, garbage 5.0 properties, expiry times in the far
//! future or the past, a session limit of 0) or raw key and value bytes. They are restored
//! on a fixed-capacity broker (tiny limits, so restoring runs out of room) and a growable
//! one.
//!
//! Invariants:
//! - nothing panics: `restore` answers every record with `Ok` or an error;
//! - restoring reports nothing back for persistence (`poll_persist` stays empty);
//! - the restored state serves clients: each stored client id reconnects (3.1.1 and 5.0,
//!   without clean start), acknowledges whatever it is sent, and time moves on past every
//!   expiry; everything the broker writes decodes as server packets.

#![no_main]

use arbitrary::Arbitrary;
use fulmar_core::broker::{Broker, BrokerStorage, Growable};
use fulmar_core::codec::{
    Ack, Connect, Packet, PacketId, Properties, ProtocolVersion, QoSPid, decode,
};
use fulmar_core::persist::{
    InboundRecord, Key, MessageRecord, RetainedRecord, SessionRecord, StoredMessage,
    SubscriptionRecord, WillRecord, encode_value,
};
use fulmar_core::time::{Duration, Instant};
use fulmar_core_fuzz::host::{Tiny, config, decode_stream, transmit};
use libfuzzer_sys::fuzz_target;

const CLIENTS: [&str; 4] = ["a", "b", "sensor-7", ""];
const TOPICS: [&str; 6] = ["a", "a/b", "$SYS/x", "a/+", "#", ""];

#[derive(Arbitrary, Debug)]
struct Message {
    topic: u8,
    qos: u8,
    retain: bool,
    expires_at: Option<u64>,
    properties: Vec<u8>,
    payload: Vec<u8>,
}

impl Message {
    fn stored(&self) -> StoredMessage<'_> {
        StoredMessage {
            topic: TOPICS[usize::from(self.topic) % TOPICS.len()],
            qos: self.qos,
            retain: self.retain,
            expires_at: self.expires_at,
            properties: &self.properties,
            payload: &self.payload,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Record {
    Session {
        client: u8,
        protocol_level: u8,
        expiry_interval: u32,
        disconnected_at: Option<u64>,
        receive_maximum: u16,
        max_packet_size: u32,
        username: Option<String>,
        will: Option<(u32, Option<u64>, Option<u32>, Message)>,
        bridge: bool,
    },
    Subscription {
        client: u8,
        filter: u8,
        options: u8,
        identifier: Option<u32>,
    },
    Message {
        client: u8,
        seq: u64,
        qos: u8,
        retain: bool,
        state: u8,
        packet_id: Option<u16>,
        identifiers: Vec<u32>,
        message: Option<Message>,
    },
    Inbound {
        client: u8,
        packet_id: u16,
    },
    Retained {
        topic: u8,
        message: Message,
    },
    /// A well-formed key of kind `kind` with value bytes that need not decode.
    Garbled {
        kind: u8,
        client: u8,
        value: Vec<u8>,
    },
    Raw {
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

fn client(index: u8) -> &'static str {
    CLIENTS[usize::from(index) % CLIENTS.len()]
}

fn topic(index: u8) -> &'static str {
    TOPICS[usize::from(index) % TOPICS.len()]
}

/// The record as a stored key and value; `None` if the encoder refuses it (the store
/// could not hold it either).
fn encode(record: &Record) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut key = vec![0u8; 512];
    let mut value = vec![0u8; 1 << 16];
    let (key_len, value_len) = match record {
        Record::Session {
            client: c,
            protocol_level,
            expiry_interval,
            disconnected_at,
            receive_maximum,
            max_packet_size,
            username,
            will,
            bridge,
        } => {
            let record = SessionRecord {
                protocol_level: *protocol_level,
                expiry_interval: *expiry_interval,
                disconnected_at: *disconnected_at,
                receive_maximum: *receive_maximum,
                max_packet_size: *max_packet_size,
                username: username.as_deref(),
                will: will
                    .as_ref()
                    .map(|(delay, due, expiry_interval, message)| WillRecord {
                        delay: *delay,
                        due: *due,
                        expiry_interval: *expiry_interval,
                        message: message.stored(),
                    }),
                bridge: *bridge,
            };
            (
                Key::Session(client(*c)).encode(&mut key).ok()?,
                encode_value(&record, &mut value).ok()?,
            )
        }
        Record::Subscription {
            client: c,
            filter,
            options,
            identifier,
        } => (
            Key::Subscription(client(*c), topic(*filter))
                .encode(&mut key)
                .ok()?,
            encode_value(
                &SubscriptionRecord {
                    options: *options,
                    identifier: *identifier,
                },
                &mut value,
            )
            .ok()?,
        ),
        Record::Message {
            client: c,
            seq,
            qos,
            retain,
            state,
            packet_id,
            identifiers,
            message,
        } => {
            let mut ids = heapless::Vec::new();
            for id in identifiers {
                if ids.push(*id).is_err() {
                    break;
                }
            }
            let record = MessageRecord {
                qos: *qos,
                retain: *retain,
                state: *state,
                packet_id: *packet_id,
                identifiers: ids,
                message: message.as_ref().map(Message::stored),
            };
            (
                Key::Message(client(*c), *seq).encode(&mut key).ok()?,
                encode_value(&record, &mut value).ok()?,
            )
        }
        Record::Inbound {
            client: c,
            packet_id,
        } => (
            Key::Inbound(client(*c), *packet_id).encode(&mut key).ok()?,
            encode_value(&InboundRecord, &mut value).ok()?,
        ),
        Record::Retained { topic: t, message } => (
            Key::Retained(topic(*t)).encode(&mut key).ok()?,
            encode_value(
                &RetainedRecord {
                    message: message.stored(),
                },
                &mut value,
            )
            .ok()?,
        ),
        Record::Garbled {
            kind,
            client: c,
            value: bytes,
        } => {
            let c = client(*c);
            let key_len = match kind % 5 {
                0 => Key::Session(c),
                1 => Key::Subscription(c, "a/#"),
                2 => Key::Message(c, 1),
                3 => Key::Inbound(c, 1),
                _ => Key::Retained(c),
            }
            .encode(&mut key)
            .ok()?;
            return Some((key[..key_len].to_vec(), bytes.clone()));
        }
        Record::Raw { key, value } => return Some((key.clone(), value.clone())),
    };
    Some((key[..key_len].to_vec(), value[..value_len].to_vec()))
}

/// Restores `records` into a fresh broker, then serves every stored client id.
fn run<S: BrokerStorage>(records: &[(Vec<u8>, Vec<u8>)]) {
    let mut broker = Broker::<S>::new(config(), 5);
    let start = Instant::from_millis(1_000_000);
    for (key, value) in records {
        let _ = broker.restore(key, value, start);
    }
    let mut buf = vec![0u8; 1 << 16];
    assert!(
        matches!(broker.poll_persist(&mut buf), Ok(None)),
        "restoring reported changes for persistence"
    );

    let mut out = vec![0u8; 600];
    let mut now = start;
    for (i, id) in CLIENTS.iter().enumerate() {
        let version = if i % 2 == 0 {
            ProtocolVersion::V3_1_1
        } else {
            ProtocolVersion::V5
        };
        let Ok(conn) = broker.handle_connect(now) else {
            continue;
        };
        let fields = Connect {
            protocol: version,
            clean_start: false,
            keep_alive: 0,
            properties: Properties::empty(),
            client_id: id,
            will: None,
            username: None,
            password: None,
        };
        let connect = Packet::from(&fields);
        let mut bytes = vec![0; connect.encoded_len(version)];
        if connect.encode(version, &mut bytes).is_ok() {
            broker.handle_bytes(conn, &bytes, now);
        }
        // Take what it is sent and acknowledge it, a few rounds.
        for _ in 0..4 {
            let mut received = Vec::new();
            transmit(&mut broker, conn, &mut out, now, |b| {
                received.extend_from_slice(b)
            });
            let used = decode_stream(&received, version).expect("the broker's output decodes");
            let mut acks = Vec::new();
            let mut at = 0;
            while at < used {
                let Ok((packet, n)) = decode(&received[at..], version, usize::MAX) else {
                    break;
                };
                at += n;
                let ack =
                    |pid: PacketId, kind: fn(Ack<'static>) -> Packet<'static>| kind(Ack::new(pid));
                let reply = match packet {
                    Packet::Publish(p) => match p.qos_pid {
                        QoSPid::AtLeastOnce(pid) => Some(ack(pid, Packet::PubAck)),
                        QoSPid::ExactlyOnce(pid) => Some(ack(pid, Packet::PubRec)),
                        QoSPid::AtMostOnce => None,
                    },
                    Packet::PubRel(a) => Some(ack(a.packet_id, Packet::PubComp)),
                    _ => None,
                };
                if let Some(reply) = reply {
                    let mut b = vec![0; reply.encoded_len(version)];
                    if reply.encode(version, &mut b).is_ok() {
                        acks.extend_from_slice(&b);
                    }
                }
            }
            if acks.is_empty() {
                break;
            }
            broker.handle_bytes(conn, &acks, now);
        }
        if i % 3 == 2 {
            broker.handle_disconnect(conn, now);
        }
        while broker.poll_event().is_some() {}
    }
    // Past every expiry and will delay the records could name.
    for step in [1u64, 60, 3_600, 86_400 * 365] {
        now = now + Duration::from_secs(step);
        broker.handle_timeout(now);
        while broker.poll_event().is_some() {}
    }
    while let Ok(Some(_)) = broker.poll_persist(&mut buf) {}
}

fuzz_target!(|records: Vec<Record>| {
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = records.iter().take(32).filter_map(encode).collect();
    run::<Tiny>(&encoded);
    run::<Growable>(&encoded);
});
