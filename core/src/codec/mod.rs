//! The MQTT wire codec: every control packet of MQTT 3.1, 3.1.1 and 5.0.
//!
//! ## Decoding
//! [`decode`] reads one packet from the front of a buffer. The result borrows topic names,
//! payloads, strings and properties from that buffer ([`Packet<'a>`]), so a host can parse
//! a stream in place:
//!
//! ```
//! use fulmar_core::codec::{decode, DecodeError, Packet, ProtocolVersion};
//!
//! // PINGREQ followed by the first byte of the next packet.
//! let stream = [0xC0, 0x00, 0x30];
//! let (packet, used) = decode(&stream, ProtocolVersion::V3_1_1, 1024).unwrap();
//! assert_eq!(packet, Packet::PingReq);
//! assert_eq!(used, 2);
//! // The rest is a frame that has not arrived yet: read more, then call again.
//! assert_eq!(decode(&stream[used..], ProtocolVersion::V3_1_1, 1024),
//!            Err(DecodeError::Incomplete { needed: 1 }));
//! ```
//!
//! The protocol version negotiated by CONNECT decides how every later packet is read; a
//! CONNECT itself is read according to the level it announces, whatever version is passed.
//! Every wire rule of the specifications is checked; each failure is a [`DecodeError`]
//! whose [`DecodeError::reason_code`] is what a broker closes the connection with.
//! Decoding only ever looks at the bytes of the one frame it returns.
//!
//! ## Encoding
//! [`Packet::encode`] writes into the caller's buffer. [`Packet::encoded_len`] is exact; if
//! the buffer is shorter, [`EncodeError::InsufficientSize`] says how long it must be and
//! nothing is written. Fields a version does not have (properties, most reason codes before
//! 5.0) are left out when encoding for that version, so one message can be sent to clients
//! of every version.

mod connect;
mod error;
mod list;
mod properties;
mod publish;
mod reason;
mod subscribe;
mod tail;
mod types;
mod wire;

pub use connect::{ConnAck, Connect, Will};
pub use error::{DecodeError, EncodeError};
pub use list::{Iter, List, ListItem};
pub use properties::{Properties, Property};
pub use publish::{Ack, Publish, QoSPid};
pub use reason::{ConnectReturnCode, ReasonCode};
pub use subscribe::{SubAck, Subscribe, Subscription, UnsubAck, Unsubscribe};
pub use tail::{Auth, Disconnect};
pub use types::{PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
pub use wire::MAX_VAR_INT;

use wire::{Reader, VarInt, Writer, decode_var_int, var_int_len};

/// The largest packet MQTT can describe: a 5-byte fixed header and the largest remaining
/// length. Pass it to [`decode`] to impose no limit of your own.
pub const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_VAR_INT as usize;

/// The control packet types (§2.1.2), the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum PacketType {
    /// 1: client request to connect.
    Connect = 1,
    /// 2: connect acknowledgment.
    ConnAck = 2,
    /// 3: publish message.
    Publish = 3,
    /// 4: publish acknowledgment (QoS 1).
    PubAck = 4,
    /// 5: publish received (QoS 2, part 1).
    PubRec = 5,
    /// 6: publish release (QoS 2, part 2).
    PubRel = 6,
    /// 7: publish complete (QoS 2, part 3).
    PubComp = 7,
    /// 8: subscribe request.
    Subscribe = 8,
    /// 9: subscribe acknowledgment.
    SubAck = 9,
    /// 10: unsubscribe request.
    Unsubscribe = 10,
    /// 11: unsubscribe acknowledgment.
    UnsubAck = 11,
    /// 12: ping request.
    PingReq = 12,
    /// 13: ping response.
    PingResp = 13,
    /// 14: disconnect notification.
    Disconnect = 14,
    /// 15: authentication exchange (5.0 only).
    Auth = 15,
}

impl PacketType {
    /// The type for a high nibble; 0 is reserved, and so is 15 before 5.0.
    pub const fn from_nibble(nibble: u8, version: ProtocolVersion) -> Option<Self> {
        Some(match nibble {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 if version.is_v5() => Self::Auth,
            _ => return None,
        })
    }

    /// The flags nibble this type must carry (all but PUBLISH have fixed flags, §2.1.3).
    const fn fixed_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// The fixed header of a packet (§2.1): type, flags and the length of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Bytes after the fixed header.
    pub remaining_length: usize,
    /// Bytes of the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Total size of the packet.
    #[inline]
    pub const fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length
    }

    /// Reads and checks a fixed header: reserved types, the flags each type requires
    /// ([MQTT-2.2.2-1], [MQTT-2.2.2-2]), the remaining length ([MQTT-1.5.5-1]) and the
    /// caller's size limit. Runs on the first bytes alone, so a host can reject a bad or
    /// oversized packet before the rest of it arrives.
    pub fn parse(
        buf: &[u8],
        version: ProtocolVersion,
        max_packet_size: usize,
    ) -> Result<Self, DecodeError> {
        let Some(&first) = buf.first() else {
            return Err(DecodeError::Incomplete { needed: 2 });
        };
        let nibble = first >> 4;
        let flags = first & 0x0F;
        let packet_type = PacketType::from_nibble(nibble, version)
            .ok_or(DecodeError::InvalidPacketType(nibble))?;
        check_flags(packet_type, flags, version)?;
        let (remaining_length, len) = match decode_var_int(&buf[1..]) {
            VarInt::Value { value, len } => (value as usize, len),
            VarInt::Incomplete => return Err(DecodeError::Incomplete { needed: 1 }),
            VarInt::Invalid => return Err(DecodeError::InvalidVarInt),
        };
        let header = Self {
            packet_type,
            flags,
            remaining_length,
            header_len: 1 + len,
        };
        let size = header.packet_len();
        if size > max_packet_size {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: max_packet_size,
            });
        }
        Ok(header)
    }
}

fn check_flags(packet: PacketType, flags: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    if packet == PacketType::Publish {
        let qos = QoS::from_bits((flags >> 1) & 0b11)?;
        // [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
        if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
            return Err(DecodeError::DupWithQoS0);
        }
        return Ok(());
    }
    let ok = if version == ProtocolVersion::V3_1 {
        // MQTT 3.1 gave every packet DUP/QoS/RETAIN fields and let clients set DUP on
        // resent PUBREL/SUBSCRIBE/UNSUBSCRIBE; only their QoS 1 marking is checked.
        packet.fixed_flags() == 0 || flags & 0b0111 == 0b0010
    } else {
        flags == packet.fixed_flags()
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidHeaderFlags { packet, flags })
    }
}

/// An MQTT control packet, borrowing its strings, payload and lists from the buffer it was
/// decoded from (or from the caller, for a packet built to be sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Packet<'a> {
    /// CONNECT (§3.1).
    Connect(Connect<'a>),
    /// CONNACK (§3.2).
    ConnAck(ConnAck<'a>),
    /// PUBLISH (§3.3).
    Publish(Publish<'a>),
    /// PUBACK (§3.4).
    PubAck(Ack<'a>),
    /// PUBREC (§3.5).
    PubRec(Ack<'a>),
    /// PUBREL (§3.6).
    PubRel(Ack<'a>),
    /// PUBCOMP (§3.7).
    PubComp(Ack<'a>),
    /// SUBSCRIBE (§3.8).
    Subscribe(Subscribe<'a>),
    /// SUBACK (§3.9).
    SubAck(SubAck<'a>),
    /// UNSUBSCRIBE (§3.10).
    Unsubscribe(Unsubscribe<'a>),
    /// UNSUBACK (§3.11).
    UnsubAck(UnsubAck<'a>),
    /// PINGREQ (§3.12).
    PingReq,
    /// PINGRESP (§3.13).
    PingResp,
    /// DISCONNECT (§3.14).
    Disconnect(Disconnect<'a>),
    /// AUTH (§3.15, MQTT 5.0 only).
    Auth(Auth<'a>),
}

/// Decodes the packet at the start of `buf`.
///
/// Returns the packet and the number of bytes it took, or
/// [`DecodeError::Incomplete`] with the least number of further bytes needed. A packet
/// larger than `max_packet_size` (counting its fixed header) is rejected as soon as its
/// fixed header is readable. Only the returned frame's bytes are ever read.
pub fn decode(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<(Packet<'_>, usize), DecodeError> {
    let header = FixedHeader::parse(buf, version, max_packet_size)?;
    let total = header.packet_len();
    let Some(frame) = buf.get(header.header_len..total) else {
        return Err(DecodeError::Incomplete {
            needed: total - buf.len(),
        });
    };
    let packet = decode_body(&header, frame, version)?;
    Ok((packet, total))
}

/// Decodes the body of a packet whose fixed header has been read.
fn decode_body<'a>(
    header: &FixedHeader,
    body: &'a [u8],
    version: ProtocolVersion,
) -> Result<Packet<'a>, DecodeError> {
    let mut r = Reader::new(body);
    let packet = match header.packet_type {
        PacketType::Connect => Packet::Connect(Connect::read(&mut r)?),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::read(&mut r, version)?),
        PacketType::Publish => Packet::Publish(Publish::read(&mut r, header.flags, version)?),
        PacketType::PubAck => Packet::PubAck(Ack::read(&mut r, PacketType::PubAck, version)?),
        PacketType::PubRec => Packet::PubRec(Ack::read(&mut r, PacketType::PubRec, version)?),
        PacketType::PubRel => Packet::PubRel(Ack::read(&mut r, PacketType::PubRel, version)?),
        PacketType::PubComp => Packet::PubComp(Ack::read(&mut r, PacketType::PubComp, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::read(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::read(&mut r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::read(&mut r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::read(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::read(&mut r, version)?),
        PacketType::Auth => Packet::Auth(Auth::read(&mut r)?),
    };
    // Nothing may follow the packet's last field: PINGREQ, PINGRESP and a 3.x DISCONNECT
    // have no body at all, and every other reader consumes exactly its fields.
    if !r.is_empty() {
        return Err(DecodeError::MalformedLength);
    }
    Ok(packet)
}

/// Length bookkeeping while sizing a packet: the total, and whether any field is larger
/// than the protocol can express.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Size {
    pub(crate) len: usize,
    pub(crate) too_large: bool,
}

impl Size {
    #[inline]
    pub(crate) fn add(&mut self, len: usize) {
        self.len += len;
    }

    /// A length-prefixed string or binary field.
    #[inline]
    pub(crate) fn field(&mut self, len: usize) {
        self.len += 2 + len;
        self.too_large |= len > wire::MAX_FIELD;
    }

    /// A property block with its variable byte integer length.
    #[inline]
    pub(crate) fn properties(&mut self, properties: &Properties<'_>) -> usize {
        let (len, too_large) = properties::properties_len(properties);
        self.len += var_int_len(len as u32) + len;
        self.too_large |= too_large || len > MAX_VAR_INT as usize;
        len
    }
}

impl Packet<'_> {
    /// The packet's type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// The remaining length for `version`, and whether a field is too large.
    fn body_size(&self, version: ProtocolVersion) -> Size {
        match self {
            Self::Connect(p) => p.size(),
            Self::ConnAck(p) => p.size(version),
            Self::Publish(p) => p.size(version),
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => {
                p.size(version)
            }
            Self::Subscribe(p) => p.size(version),
            Self::SubAck(p) => p.size(version),
            Self::Unsubscribe(p) => p.size(version),
            Self::UnsubAck(p) => p.size(version),
            Self::PingReq | Self::PingResp => Size::default(),
            Self::Disconnect(p) => p.size(version),
            Self::Auth(p) => p.size(),
        }
    }

    /// The first byte: type and flags.
    fn first_byte(&self) -> u8 {
        let flags = match self {
            Self::Publish(p) => p.flags(),
            other => other.packet_type().fixed_flags(),
        };
        (self.packet_type() as u8) << 4 | flags
    }

    /// The exact number of bytes [`Packet::encode`] writes for `version`. A CONNECT is
    /// always encoded for its own [`Connect::protocol`].
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_size(version).len;
        1 + var_int_len(body as u32) + body
    }

    /// Encodes the packet for a connection speaking `version` into the start of `buf`,
    /// returning the number of bytes written.
    ///
    /// On error nothing is written: [`EncodeError::InsufficientSize`] gives the length
    /// `buf` must have.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut [u8]) -> Result<usize, EncodeError> {
        if matches!(self, Self::Auth(_)) && !version.is_v5() {
            return Err(EncodeError::UnsupportedInVersion);
        }
        let size = self.body_size(version);
        if size.too_large || size.len > MAX_VAR_INT as usize {
            return Err(EncodeError::TooLarge);
        }
        let required = 1 + var_int_len(size.len as u32) + size.len;
        let Some(out) = buf.get_mut(..required) else {
            return Err(EncodeError::InsufficientSize { required });
        };
        let mut w = Writer::new(out);
        w.u8(self.first_byte());
        w.var_int(size.len as u32);
        match self {
            Self::Connect(p) => p.write(&mut w),
            Self::ConnAck(p) => p.write(&mut w, version),
            Self::Publish(p) => p.write(&mut w, version),
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => {
                p.write(&mut w, version)
            }
            Self::Subscribe(p) => p.write(&mut w, version),
            Self::SubAck(p) => p.write(&mut w, version),
            Self::Unsubscribe(p) => p.write(&mut w, version),
            Self::UnsubAck(p) => p.write(&mut w, version),
            Self::PingReq | Self::PingResp => {}
            Self::Disconnect(p) => p.write(&mut w, version),
            Self::Auth(p) => p.write(&mut w),
        }
        debug_assert_eq!(w.position(), required, "encoded_len disagrees with encode");
        Ok(required)
    }

    /// Encodes into a new `Vec`.
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self, version: ProtocolVersion) -> Result<alloc::vec::Vec<u8>, EncodeError> {
        let mut out = alloc::vec![0; self.encoded_len(version)];
        self.encode(version, &mut out)?;
        Ok(out)
    }
}

/// Reads a packet identifier that must not be 0 ([MQTT-2.2.1-3]).
#[inline]
pub(crate) fn read_packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)
}

/// Reads a reason code and checks that `packet` may carry it.
#[inline]
pub(crate) fn read_reason_code(
    r: &mut Reader<'_>,
    packet: PacketType,
) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    match ReasonCode::from_u8(code) {
        Some(reason) if reason.is_valid_for(packet) => Ok(reason),
        _ => Err(DecodeError::InvalidReasonCode { packet, code }),
    }
}
