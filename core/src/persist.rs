//! Persistence records: how a broker's durable state is written to flash, disk or a
//! cluster, and read back on boot to rebuild the same state.
//!
//! The broker reports changes as key/value operations ([`crate::broker::PersistOp`], from
//! `Broker::poll_persist`); a host applies them to any ordered key/value store and, on
//! boot, feeds every stored pair to `Broker::restore`. Values are postcard-encoded
//! structs behind a [`FORMAT_VERSION`] byte, so firmware, gateway and cluster share one
//! format.
//!
//! ## Keys
//! Keys are built so that everything of one session shares a prefix
//! ([`Key::session_prefix`]): `PersistOp::DeleteSession` removes the prefix at once.
//! - `S` + varint length + client id + `0`: the session itself ([`SessionRecord`])
//! - ... + `1` + filter: one subscription ([`SubscriptionRecord`])
//! - ... + `2` + sequence (u64, big endian): one queued or in-flight message
//!   ([`MessageRecord`]); sequence order is queue order
//! - ... + `3` + packet id (u16, big endian): a QoS 2 packet identifier received and not
//!   yet released (no value needed: [`InboundRecord`])
//! - `R` + topic: a retained message ([`RetainedRecord`])
//!
//! Times are [`crate::time::Instant`] milliseconds: a host that persists should use an
//! origin that survives restarts (Unix time), or expiry clocks restart at boot.

use serde::{Deserialize, Serialize};

/// Version byte in front of every value; bumped when a record's layout changes.
pub const FORMAT_VERSION: u8 = 1;

/// What one key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// A session's own state.
    Session(&'a str),
    /// A subscription of a session.
    Subscription(&'a str, &'a str),
    /// A message queued for (or in flight to) a session, by sequence number.
    Message(&'a str, u64),
    /// A QoS 2 packet identifier the session's client sent and has not released.
    Inbound(&'a str, u16),
    /// The retained message of a topic.
    Retained(&'a str),
}

/// Why a key or value could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PersistError {
    /// The buffer is too small; `required` bytes would do (or more, for values).
    BufferTooSmall {
        /// Bytes needed.
        required: usize,
    },
    /// Not a key or value this version writes.
    Malformed,
    /// A value of an unknown [`FORMAT_VERSION`].
    UnsupportedVersion(u8),
    /// The broker had no room for the restored state.
    Capacity,
}

impl core::fmt::Display for PersistError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BufferTooSmall { required } => {
                write!(f, "buffer too small: {required} bytes needed")
            }
            Self::Malformed => f.write_str("malformed persistence record"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported record version {v}"),
            Self::Capacity => f.write_str("no room to restore the record"),
        }
    }
}

impl core::error::Error for PersistError {}

const SESSION: u8 = 0;
const SUBSCRIPTION: u8 = 1;
const MESSAGE: u8 = 2;
const INBOUND: u8 = 3;

struct Out<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) if self.overflow == 0 => dst.copy_from_slice(bytes),
            _ => self.overflow += bytes.len(),
        }
        self.len += bytes.len();
    }

    fn var(&mut self, mut value: usize) {
        loop {
            let byte = (value & 0x7F) as u8;
            value >>= 7;
            if value == 0 {
                self.put(&[byte]);
                return;
            }
            self.put(&[byte | 0x80]);
        }
    }
}

impl<'a> Key<'a> {
    /// Writes the key into `buf`, returning its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, PersistError> {
        let mut out = Out {
            buf,
            len: 0,
            overflow: 0,
        };
        match *self {
            Self::Retained(topic) => {
                out.put(b"R");
                out.put(topic.as_bytes());
            }
            Self::Session(c)
            | Self::Subscription(c, _)
            | Self::Message(c, _)
            | Self::Inbound(c, _) => {
                out.put(b"S");
                out.var(c.len());
                out.put(c.as_bytes());
                match *self {
                    Self::Session(_) => out.put(&[SESSION]),
                    Self::Subscription(_, filter) => {
                        out.put(&[SUBSCRIPTION]);
                        out.put(filter.as_bytes());
                    }
                    Self::Message(_, seq) => {
                        out.put(&[MESSAGE]);
                        out.put(&seq.to_be_bytes());
                    }
                    Self::Inbound(_, pid) => {
                        out.put(&[INBOUND]);
                        out.put(&pid.to_be_bytes());
                    }
                    Self::Retained(_) => {}
                }
            }
        }
        if out.overflow > 0 {
            return Err(PersistError::BufferTooSmall { required: out.len });
        }
        Ok(out.len)
    }

    /// The prefix shared by every key of the session `client_id`.
    pub fn session_prefix(client_id: &str, buf: &mut [u8]) -> Result<usize, PersistError> {
        let mut out = Out {
            buf,
            len: 0,
            overflow: 0,
        };
        out.put(b"S");
        out.var(client_id.len());
        out.put(client_id.as_bytes());
        if out.overflow > 0 {
            return Err(PersistError::BufferTooSmall { required: out.len });
        }
        Ok(out.len)
    }

    /// Reads a key written by [`Key::encode`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, PersistError> {
        let text = |b: &'a [u8]| core::str::from_utf8(b).map_err(|_| PersistError::Malformed);
        match bytes.split_first() {
            Some((b'R', topic)) => Ok(Self::Retained(text(topic)?)),
            Some((b'S', rest)) => {
                let mut len = 0usize;
                let mut i = 0;
                loop {
                    let byte = *rest.get(i).ok_or(PersistError::Malformed)?;
                    len |= usize::from(byte & 0x7F) << (7 * i);
                    i += 1;
                    if byte & 0x80 == 0 {
                        break;
                    }
                    if i >= 4 {
                        return Err(PersistError::Malformed);
                    }
                }
                let client = text(rest.get(i..i + len).ok_or(PersistError::Malformed)?)?;
                let tail = rest.get(i + len..).ok_or(PersistError::Malformed)?;
                match tail.split_first() {
                    Some((&SESSION, [])) => Ok(Self::Session(client)),
                    Some((&SUBSCRIPTION, filter)) => Ok(Self::Subscription(client, text(filter)?)),
                    Some((&MESSAGE, seq)) => {
                        let seq: [u8; 8] = seq.try_into().map_err(|_| PersistError::Malformed)?;
                        Ok(Self::Message(client, u64::from_be_bytes(seq)))
                    }
                    Some((&INBOUND, pid)) => {
                        let pid: [u8; 2] = pid.try_into().map_err(|_| PersistError::Malformed)?;
                        Ok(Self::Inbound(client, u16::from_be_bytes(pid)))
                    }
                    _ => Err(PersistError::Malformed),
                }
            }
            _ => Err(PersistError::Malformed),
        }
    }
}

/// A session's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord<'a> {
    /// Protocol level of the last connection (3, 4 or 5).
    pub protocol_level: u8,
    /// Session Expiry Interval in seconds.
    pub expiry_interval: u32,
    /// When the connection ended, if the session is offline (milliseconds).
    pub disconnected_at: Option<u64>,
    /// The client's Receive Maximum.
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub max_packet_size: u32,
    /// The user name.
    #[serde(borrow)]
    pub username: Option<&'a str>,
    /// The pending will, if any.
    #[serde(borrow)]
    pub will: Option<WillRecord<'a>>,
    /// A bridge's session (no network client).
    pub bridge: bool,
}

/// A will waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord<'a> {
    /// Will Delay Interval in seconds.
    pub delay: u32,
    /// When it is due (milliseconds), once the connection has ended.
    pub due: Option<u64>,
    /// Message Expiry Interval in seconds, counted from publication.
    pub expiry_interval: Option<u32>,
    /// The message.
    #[serde(borrow)]
    pub message: StoredMessage<'a>,
}

/// A message as stored: topic, 5.0 properties in wire form, payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// QoS as published.
    pub qos: u8,
    /// RETAIN as published.
    pub retain: bool,
    /// When the Message Expiry Interval runs out (milliseconds).
    pub expires_at: Option<u64>,
    /// Properties kept with the message (MQTT 5.0 wire form).
    #[serde(with = "bytes")]
    pub properties: &'a [u8],
    /// The payload.
    #[serde(with = "bytes")]
    pub payload: &'a [u8],
}

/// A subscription's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The options byte in MQTT 5.0 form (QoS, no local, retain as published, retain
    /// handling).
    pub options: u8,
    /// Subscription identifier.
    pub identifier: Option<u32>,
}

/// A message queued for, or in flight to, a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord<'a> {
    /// QoS of this delivery.
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// 0 queued, 1 awaiting PUBACK, 2 awaiting PUBREC, 3 awaiting PUBCOMP.
    pub state: u8,
    /// Packet identifier, once in flight.
    pub packet_id: Option<u16>,
    /// Subscription identifiers to send with it.
    pub identifiers: heapless::Vec<u32, { crate::router::MAX_IDENTIFIERS }>,
    /// The message (absent once a QoS 2 flow reached PUBREL).
    #[serde(borrow)]
    pub message: Option<StoredMessage<'a>>,
}

/// The retained message of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedRecord<'a> {
    /// The message.
    #[serde(borrow)]
    pub message: StoredMessage<'a>,
}

/// A QoS 2 packet identifier awaiting PUBREL: the key says everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundRecord;

/// Writes `record` behind the version byte; returns the length.
pub fn encode_value<T: Serialize>(record: &T, buf: &mut [u8]) -> Result<usize, PersistError> {
    let Some((version, rest)) = buf.split_first_mut() else {
        return Err(PersistError::BufferTooSmall { required: 1 + 64 });
    };
    *version = FORMAT_VERSION;
    match postcard::to_slice(record, rest) {
        Ok(used) => Ok(1 + used.len()),
        Err(_) => {
            let required =
                postcard::experimental::serialized_size(record).unwrap_or(rest.len() * 2);
            Err(PersistError::BufferTooSmall {
                required: 1 + required,
            })
        }
    }
}

/// Reads a value written by [`encode_value`].
pub fn decode_value<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PersistError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|_| PersistError::Malformed)
        }
        Some((&v, _)) => Err(PersistError::UnsupportedVersion(v)),
        None => Err(PersistError::Malformed),
    }
}

/// Byte slices as postcard byte strings (length + bytes), borrowed on decode.
mod bytes {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_share_the_session_prefix() {
        let keys = [
            Key::Session("c1"),
            Key::Subscription("c1", "a/+/#"),
            Key::Message("c1", 0x0102_0304_0506_0708),
            Key::Inbound("c1", 513),
            Key::Retained("a/b"),
        ];
        let mut prefix = [0u8; 16];
        let p = Key::session_prefix("c1", &mut prefix).unwrap();
        for key in keys {
            let mut buf = [0u8; 64];
            let n = key.encode(&mut buf).unwrap();
            assert_eq!(Key::decode(&buf[..n]), Ok(key));
            let in_session = !matches!(key, Key::Retained(_));
            assert_eq!(buf[..n].starts_with(&prefix[..p]), in_session, "{key:?}");
        }
        // Message keys sort in sequence order.
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        let na = Key::Message("c", 255).encode(&mut a).unwrap();
        let nb = Key::Message("c", 256).encode(&mut b).unwrap();
        assert!(a[..na] < b[..nb]);
        assert_eq!(
            Key::Session("c").encode(&mut [0u8; 2]),
            Err(PersistError::BufferTooSmall { required: 4 })
        );
    }

    #[test]
    fn values_round_trip_with_a_version_byte() {
        let record = MessageRecord {
            qos: 1,
            retain: false,
            state: 1,
            packet_id: Some(7),
            identifiers: heapless::Vec::from_slice(&[3, 9]).unwrap(),
            message: Some(StoredMessage {
                topic: "t",
                qos: 2,
                retain: true,
                expires_at: Some(5000),
                properties: &[0x26, 0, 1, b'k', 0, 1, b'v'],
                payload: b"payload",
            }),
        };
        let mut buf = [0u8; 128];
        let n = encode_value(&record, &mut buf).unwrap();
        assert_eq!(buf[0], FORMAT_VERSION);
        let back: MessageRecord<'_> = decode_value(&buf[..n]).unwrap();
        assert_eq!(back, record);
        let mut old = buf;
        old[0] = 99;
        assert_eq!(
            decode_value::<MessageRecord<'_>>(&old[..n]),
            Err(PersistError::UnsupportedVersion(99))
        );
        assert!(matches!(
            encode_value(&record, &mut [0u8; 8]),
            Err(PersistError::BufferTooSmall { .. })
        ));
    }
}
