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
pub(crate) mod properties;
mod publish;
mod reason;
mod subscribe;
mod tail;
mod types;
mod wire;

pub use connect::{ConnAck, Connect, ConnectPacket, Will};
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
    #[inline]
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
        // [MQTT-1.5.5-1] (5.0): the shortest encoding; 3.1 and 3.1.1 do not demand it. A
        // CONNECT's level is not known yet, so `decode` checks a 5.0 CONNECT's afterwards.
        if version.is_v5()
            && packet_type != PacketType::Connect
            && len != var_int_len(remaining_length as u32)
        {
            return Err(DecodeError::InvalidVarInt);
        }
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
    // A CONNECT's header is read before the level it announces, and must be judged the same
    // whatever version the caller passes: 3.1.1 and 5.0 require 0 ([MQTT-2.2.2-2] of 3.1.1,
    // [MQTT-2.1.3-1] of 5.0), and 3.1 gives these bits no meaning in CONNECT.
    let ok = if version == ProtocolVersion::V3_1 && packet != PacketType::Connect {
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
    /// CONNECT (§3.1); [`ConnectPacket::get`] gives its fields.
    Connect(ConnectPacket<'a>),
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
        PacketType::Connect => {
            let connect = Connect::read(&mut r)?;
            // [MQTT-1.5.5-1] (5.0), deferred from `FixedHeader::parse` until the level is known.
            if connect.protocol.is_v5()
                && header.header_len != 1 + var_int_len(header.remaining_length as u32)
            {
                return Err(DecodeError::InvalidVarInt);
            }
            Packet::Connect(ConnectPacket::from_wire(body))
        }
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
        match self {
            // Most of what a broker sends: sized and written straight through, without the
            // general dispatch below (two matches over every packet type and two calls).
            Self::Publish(p) => encode_frame(buf, self.first_byte(), p.size(version), |w| {
                p.write(w, version)
            }),
            Self::Auth(_) if !version.is_v5() => Err(EncodeError::UnsupportedInVersion),
            _ => encode_frame(buf, self.first_byte(), self.body_size(version), |w| {
                self.write_body(w, version)
            }),
        }
    }

    /// Writes everything after the fixed header.
    fn write_body(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        match self {
            Self::Connect(p) => p.write(w),
            Self::ConnAck(p) => p.write(w, version),
            Self::Publish(p) => p.write(w, version),
            Self::PubAck(p) | Self::PubRec(p) | Self::PubRel(p) | Self::PubComp(p) => {
                p.write(w, version)
            }
            Self::Subscribe(p) => p.write(w, version),
            Self::SubAck(p) => p.write(w, version),
            Self::Unsubscribe(p) => p.write(w, version),
            Self::UnsubAck(p) => p.write(w, version),
            Self::PingReq | Self::PingResp => {}
            Self::Disconnect(p) => p.write(w, version),
            Self::Auth(p) => p.write(w),
        }
    }

    /// Encodes into a new `Vec`.
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self, version: ProtocolVersion) -> Result<alloc::vec::Vec<u8>, EncodeError> {
        let mut out = alloc::vec![0; self.encoded_len(version)];
        self.encode(version, &mut out)?;
        Ok(out)
    }
}

/// Writes a packet whose first byte is `first` and whose body `size` says how long: the
/// fixed header, then `write_body`; or nothing at all if the body cannot be encoded or
/// `buf` is too short.
#[inline(always)]
fn encode_frame(
    buf: &mut [u8],
    first: u8,
    size: Size,
    write_body: impl FnOnce(&mut Writer<'_>),
) -> Result<usize, EncodeError> {
    if size.too_large || size.len > MAX_VAR_INT as usize {
        return Err(EncodeError::TooLarge);
    }
    let required = 1 + var_int_len(size.len as u32) + size.len;
    let Some(out) = buf.get_mut(..required) else {
        return Err(EncodeError::InsufficientSize { required });
    };
    let mut w = Writer::new(out);
    w.u8(first);
    w.var_int(size.len as u32);
    write_body(&mut w);
    debug_assert_eq!(w.position(), required, "encoded_len disagrees with encode");
    Ok(required)
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

#[cfg(test)]
pub(crate) mod tests {
    //! The fixed header (§2.2 of 3.1.1, §2.1 of 5.0), PINGREQ (§3.12), PINGRESP (§3.13),
    //! framing (`Incomplete`) and the receiver's size limit, with byte vectors written from
    //! the specifications. The helpers here are shared by the test modules of the other
    //! packet files.

    use super::*;

    pub(crate) const V3_1: ProtocolVersion = ProtocolVersion::V3_1;
    pub(crate) const V3_1_1: ProtocolVersion = ProtocolVersion::V3_1_1;
    pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;

    /// A packet identifier for a test vector.
    pub(crate) fn pid(id: u16) -> PacketId {
        PacketId::new(id).unwrap()
    }

    /// A copy of `base` with `patch` written at `at`: a valid vector with one field broken.
    pub(crate) fn patched<const N: usize>(base: &[u8; N], at: usize, patch: &[u8]) -> [u8; N] {
        let mut bytes = *base;
        bytes[at..at + patch.len()].copy_from_slice(patch);
        bytes
    }

    /// Decodes `bytes`, which must be exactly one packet. Also checks that bytes after the
    /// frame change nothing: only the frame is ever read.
    pub(crate) fn decode_whole(bytes: &[u8], version: ProtocolVersion) -> Packet<'_> {
        let (packet, used) = decode(bytes, version, MAX_PACKET_SIZE).unwrap();
        assert_eq!(used, bytes.len(), "the vector must be one whole packet");
        let mut longer = [0xFF; 1024];
        longer[..bytes.len()].copy_from_slice(bytes);
        let (again, used) = decode(&longer[..bytes.len() + 1], version, MAX_PACKET_SIZE).unwrap();
        assert_eq!((again, used), (packet, bytes.len()));
        packet
    }

    /// Asserts that `bytes` fail to decode with `error`, answered with `reason`.
    ///
    /// When the fixed header itself is valid, the vector's remaining length must match its
    /// size, so that a test cannot pass because the vector was framed wrongly.
    #[track_caller]
    pub(crate) fn assert_decode_error(
        bytes: &[u8],
        version: ProtocolVersion,
        error: DecodeError,
        reason: ReasonCode,
    ) {
        if let Ok(header) = FixedHeader::parse(bytes, version, MAX_PACKET_SIZE) {
            assert_eq!(header.packet_len(), bytes.len(), "vector framed wrongly");
        }
        assert_eq!(decode(bytes, version, MAX_PACKET_SIZE), Err(error));
        assert_eq!(error.reason_code(), reason);
    }

    /// Asserts that `packet` encodes for `version` to exactly `expected`, that
    /// `encoded_len` agrees, and that every shorter buffer is refused with
    /// `InsufficientSize` and left untouched.
    #[track_caller]
    pub(crate) fn assert_encodes(packet: &Packet<'_>, version: ProtocolVersion, expected: &[u8]) {
        const FILL: u8 = 0xAA;
        let required = expected.len();
        assert_eq!(packet.encoded_len(version), required, "encoded_len");
        let mut buf = [FILL; 1024];
        assert!(required < buf.len());
        for short in 0..required {
            assert_eq!(
                packet.encode(version, &mut buf[..short]),
                Err(EncodeError::InsufficientSize { required })
            );
            assert!(buf.iter().all(|&b| b == FILL), "a refused encode wrote");
        }
        assert_eq!(packet.encode(version, &mut buf[..required]), Ok(required));
        assert_eq!(&buf[..required], expected);
        buf.fill(FILL);
        assert_eq!(packet.encode(version, &mut buf), Ok(required));
        assert_eq!(&buf[..required], expected);
        assert!(
            buf[required..].iter().all(|&b| b == FILL),
            "wrote past the packet"
        );
    }

    /// Asserts `Incomplete` for every proper prefix of the packet `bytes`: exactly the
    /// missing byte count once the fixed header is complete, at least 1 before.
    #[track_caller]
    pub(crate) fn assert_incomplete_prefixes(bytes: &[u8], version: ProtocolVersion) {
        let header = FixedHeader::parse(bytes, version, MAX_PACKET_SIZE).unwrap();
        let total = header.packet_len();
        assert_eq!(total, bytes.len());
        for len in 0..total {
            let needed = match decode(&bytes[..len], version, MAX_PACKET_SIZE) {
                Err(DecodeError::Incomplete { needed }) => needed,
                other => panic!("prefix of {len} bytes: {other:?}"),
            };
            if len >= header.header_len {
                assert_eq!(needed, total - len, "prefix of {len} bytes");
            } else {
                assert!((1..=total - len).contains(&needed), "prefix of {len} bytes");
            }
        }
    }

    // 3.1.1 §3.12 / 5.0 §3.12: PINGREQ is a fixed header alone.
    static PINGREQ_BYTES: [u8; 2] = [
        0xC0, // PINGREQ, flags 0000
        0x00, // remaining length 0
    ];

    // 3.1.1 §3.13 / 5.0 §3.13: PINGRESP is a fixed header alone.
    static PINGRESP_BYTES: [u8; 2] = [
        0xD0, // PINGRESP, flags 0000
        0x00, // remaining length 0
    ];

    #[test]
    fn pingreq_decode() {
        for version in [V3_1, V3_1_1, V5] {
            assert_eq!(decode_whole(&PINGREQ_BYTES, version), Packet::PingReq);
            assert_incomplete_prefixes(&PINGREQ_BYTES, version);
        }
    }

    #[test]
    fn pingreq_encode() {
        for version in [V3_1, V3_1_1, V5] {
            assert_encodes(&Packet::PingReq, version, &PINGREQ_BYTES);
        }
    }

    #[test]
    fn pingresp_decode() {
        for version in [V3_1, V3_1_1, V5] {
            assert_eq!(decode_whole(&PINGRESP_BYTES, version), Packet::PingResp);
        }
    }

    #[test]
    fn pingresp_encode() {
        for version in [V3_1, V3_1_1, V5] {
            assert_encodes(&Packet::PingResp, version, &PINGRESP_BYTES);
        }
    }

    #[test]
    fn pingreq_and_pingresp_with_a_body_are_malformed() {
        // §3.12.2/§3.12.3, §3.13.2/§3.13.3: no variable header, no payload. A remaining
        // length of 1 leaves a byte no field accounts for.
        for version in [V3_1, V3_1_1, V5] {
            for first in [0xC0, 0xD0] {
                assert_decode_error(
                    &[first, 0x01, 0x00],
                    version,
                    DecodeError::MalformedLength,
                    ReasonCode::MalformedPacket,
                );
            }
        }
    }

    #[test]
    fn remaining_length_example_321() {
        // 3.1.1 §2.2.3: "the number 321 decimal (= 65 + 2*128) is encoded as two bytes
        // ... The first byte is 65+128 = 193 ... The second byte is 2."
        let header = FixedHeader::parse(&[0x30, 0xC1, 0x02], V3_1_1, MAX_PACKET_SIZE).unwrap();
        assert_eq!(
            header,
            FixedHeader {
                packet_type: PacketType::Publish,
                flags: 0,
                remaining_length: 321,
                header_len: 3,
            }
        );
        // And the encoder writes it so: PUBLISH "t" with 318 payload bytes.
        let mut expected = [b'p'; 324];
        expected[..6].copy_from_slice(&[
            0x30, // PUBLISH, QoS 0
            0xC1, 0x02, // remaining length 321
            0x00, 0x01, b't', // topic name "t"
        ]);
        let publish = Packet::Publish(Publish {
            dup: false,
            qos_pid: QoSPid::AtMostOnce,
            retain: false,
            topic: "t",
            properties: Properties::empty(),
            payload: &expected[6..],
        });
        assert_encodes(&publish, V3_1_1, &expected);
        assert_eq!(decode_whole(&expected, V3_1_1), publish);
    }

    #[test]
    fn remaining_length_boundaries() {
        // Table 2.4 of 3.1.1 §2.2.3, table 1-1 of 5.0 §1.5.5: smallest and largest values
        // of each size, read as the remaining length of a PUBLISH.
        let cases: [(&[u8], usize); 8] = [
            (&[0x30, 0x00], 0),
            (&[0x30, 0x7F], 127),
            (&[0x30, 0x80, 0x01], 128),
            (&[0x30, 0xFF, 0x7F], 16_383),
            (&[0x30, 0x80, 0x80, 0x01], 16_384),
            (&[0x30, 0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x30, 0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, remaining_length) in cases {
            let header = FixedHeader::parse(bytes, V5, MAX_PACKET_SIZE).unwrap();
            assert_eq!(header.remaining_length, remaining_length);
            assert_eq!(header.header_len, bytes.len());
        }
    }

    #[test]
    fn largest_remaining_length_is_268_435_455() {
        // 3.1.1 §2.2.3, 5.0 §1.5.5: four bytes at most, so 268 435 455 is the largest
        // remaining length; the body is then still missing in full.
        let bytes = [
            0x30, // PUBLISH
            0xFF, 0xFF, 0xFF, 0x7F, // remaining length 268 435 455
        ];
        assert_eq!(
            decode(&bytes, V5, MAX_PACKET_SIZE),
            Err(DecodeError::Incomplete {
                needed: 268_435_455
            })
        );
        assert_eq!(MAX_PACKET_SIZE, 5 + MAX_VAR_INT as usize);
    }

    #[test]
    fn remaining_length_of_five_bytes_is_malformed() {
        // 3.1.1 §2.2.3, 5.0 §1.5.5: "The maximum number of bytes in the Variable Byte
        // Integer field is four." Anything larger than 268 435 455 needs a fifth byte.
        for version in [V3_1, V3_1_1, V5] {
            assert_decode_error(
                &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                version,
                DecodeError::InvalidVarInt,
                ReasonCode::MalformedPacket,
            );
            // Known as soon as the fourth byte says "more follows".
            assert_decode_error(
                &[0x30, 0x80, 0x80, 0x80, 0x80],
                version,
                DecodeError::InvalidVarInt,
                ReasonCode::MalformedPacket,
            );
        }
    }

    #[test]
    fn remaining_length_must_be_minimal_in_5_0() {
        // [MQTT-1.5.5-1] (5.0): "The encoded value MUST use the minimum number of bytes
        // necessary to represent the value." 3.1.1 §2.2.3 has no such rule.
        static PINGREQ_LONG_LENGTH: [u8; 3] = [
            0xC0, // PINGREQ
            0x80, 0x00, // remaining length 0 in two bytes
        ];
        for version in [V3_1, V3_1_1] {
            assert_eq!(decode_whole(&PINGREQ_LONG_LENGTH, version), Packet::PingReq);
        }
        assert_decode_error(
            &PINGREQ_LONG_LENGTH,
            V5,
            DecodeError::InvalidVarInt,
            ReasonCode::MalformedPacket,
        );
        assert_decode_error(
            &[0x40, 0x82, 0x80, 0x00, 0x00, 0x0A], // PUBACK, remaining length 2 in 3 bytes
            V5,
            DecodeError::InvalidVarInt,
            ReasonCode::MalformedPacket,
        );
        // A CONNECT is judged by the level it announces, once its body has been read.
        static CONNECT_V5_LONG_LENGTH: [u8; 16] = [
            0x10, // CONNECT
            0x8D, 0x00, // remaining length 13 in two bytes
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x05, // protocol version 5
            0x02, // flags: clean start
            0x00, 0x3C, // keep alive 60 s
            0x00, // property length 0
            0x00, 0x00, // client identifier: empty
        ];
        for version in [V3_1_1, V5] {
            assert_decode_error(
                &CONNECT_V5_LONG_LENGTH,
                version,
                DecodeError::InvalidVarInt,
                ReasonCode::MalformedPacket,
            );
        }
        static CONNECT_V3_1_1_LONG_LENGTH: [u8; 15] = [
            0x10, // CONNECT
            0x8C, 0x00, // remaining length 12 in two bytes
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x04, // protocol level 4
            0x02, // flags: clean session
            0x00, 0x3C, // keep alive 60 s
            0x00, 0x00, // client identifier: empty
        ];
        let Packet::Connect(connect) = decode_whole(&CONNECT_V3_1_1_LONG_LENGTH, V5) else {
            panic!("not a CONNECT");
        };
        assert_eq!(connect.get().protocol, V3_1_1);
    }

    #[test]
    fn reserved_packet_types() {
        // 3.1.1 §2.2.1 table 2.1: 0 and 15 are reserved; 5.0 §2.1.2: 0 is reserved, 15 is AUTH.
        for version in [V3_1, V3_1_1, V5] {
            for flags in [0x00, 0x02] {
                assert_decode_error(
                    &[flags, 0x00],
                    version,
                    DecodeError::InvalidPacketType(0),
                    ReasonCode::MalformedPacket,
                );
            }
        }
        for version in [V3_1, V3_1_1] {
            assert_decode_error(
                &[0xF0, 0x00],
                version,
                DecodeError::InvalidPacketType(15),
                ReasonCode::MalformedPacket,
            );
        }
    }

    /// Table 2.2 of 3.1.1 §2.2.2 and table 2-2 of 5.0 §2.1.3: the flags nibble every type
    /// but PUBLISH must carry.
    const REQUIRED_FLAGS: [(u8, PacketType, u8); 14] = [
        (0x1, PacketType::Connect, 0b0000),
        (0x2, PacketType::ConnAck, 0b0000),
        (0x4, PacketType::PubAck, 0b0000),
        (0x5, PacketType::PubRec, 0b0000),
        (0x6, PacketType::PubRel, 0b0010), // [MQTT-3.6.1-1]
        (0x7, PacketType::PubComp, 0b0000),
        (0x8, PacketType::Subscribe, 0b0010), // [MQTT-3.8.1-1]
        (0x9, PacketType::SubAck, 0b0000),
        (0xA, PacketType::Unsubscribe, 0b0010), // [MQTT-3.10.1-1]
        (0xB, PacketType::UnsubAck, 0b0000),
        (0xC, PacketType::PingReq, 0b0000),
        (0xD, PacketType::PingResp, 0b0000),
        (0xE, PacketType::Disconnect, 0b0000), // [MQTT-3.14.1-1] (5.0)
        (0xF, PacketType::Auth, 0b0000),       // [MQTT-3.15.1-1], 5.0 only
    ];

    #[test]
    fn reserved_header_flags_are_malformed() {
        // [MQTT-2.2.2-1], [MQTT-2.2.2-2] (3.1.1), [MQTT-2.1.3-1] (5.0): a reserved flag bit
        // must have the value the table lists; anything else is a Malformed Packet.
        for version in [V3_1_1, V5] {
            for (nibble, packet, required) in REQUIRED_FLAGS {
                if packet == PacketType::Auth && version != V5 {
                    continue;
                }
                for flags in 0..16u8 {
                    let first = nibble << 4 | flags;
                    if flags == required {
                        let header = FixedHeader::parse(&[first, 0x00], version, 2).unwrap();
                        assert_eq!(header.packet_type, packet);
                    } else {
                        assert_decode_error(
                            &[first, 0x00],
                            version,
                            DecodeError::InvalidHeaderFlags { packet, flags },
                            ReasonCode::MalformedPacket,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pubrel_subscribe_unsubscribe_need_flags_0010() {
        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: bits 3-0 must be 0,0,1,0; a
        // PUBREL written with the flags of PUBACK is malformed, however sound its body.
        for version in [V3_1_1, V5] {
            for (first, packet) in [
                (0x60, PacketType::PubRel),
                (0x80, PacketType::Subscribe),
                (0xA0, PacketType::Unsubscribe),
            ] {
                assert_decode_error(
                    &[first, 0x02, 0x00, 0x01],
                    version,
                    DecodeError::InvalidHeaderFlags { packet, flags: 0 },
                    ReasonCode::MalformedPacket,
                );
            }
        }
    }

    #[test]
    fn v3_1_header_flags_are_lenient() {
        // MQTT 3.1 §2.1: every packet has DUP, QoS and RETAIN fields. PUBREL, SUBSCRIBE and
        // UNSUBSCRIBE are sent at QoS 1 and set DUP when resent; the other packets do not
        // use the fields, so they are not checked.
        static PUBREL_RESENT: [u8; 4] = [
            0x6A, // PUBREL, DUP 1, QoS 1, RETAIN 0
            0x02, // remaining length 2
            0x00, 0x07, // message identifier 7
        ];
        assert_eq!(
            decode_whole(&PUBREL_RESENT, V3_1),
            Packet::PubRel(Ack::new(pid(7)))
        );
        // 3.1.1 has no DUP on PUBREL.
        assert_decode_error(
            &PUBREL_RESENT,
            V3_1_1,
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::PubRel,
                flags: 0b1010,
            },
            ReasonCode::MalformedPacket,
        );
        // QoS 0, QoS 2 and RETAIN are still wrong for a PUBREL in 3.1.
        for flags in [0b0000, 0b0100, 0b0011, 0b1000] {
            assert_decode_error(
                &patched(&PUBREL_RESENT, 0, &[0x60 | flags]),
                V3_1,
                DecodeError::InvalidHeaderFlags {
                    packet: PacketType::PubRel,
                    flags,
                },
                ReasonCode::MalformedPacket,
            );
        }
        // PINGREQ with every flag set: ignored in 3.1, malformed in 3.1.1.
        assert_eq!(decode_whole(&[0xCF, 0x00], V3_1), Packet::PingReq);
        assert_decode_error(
            &[0xCF, 0x00],
            V3_1_1,
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::PingReq,
                flags: 0xF,
            },
            ReasonCode::MalformedPacket,
        );
    }

    /// PUBLISH "t" with 127 payload bytes: remaining length 130 takes two bytes.
    fn publish_with_two_byte_length() -> [u8; 133] {
        let mut bytes = [b'x'; 133];
        bytes[..6].copy_from_slice(&[
            0x30, // PUBLISH, QoS 0
            0x82, 0x01, // remaining length 130 = 2 + 1 * 128
            0x00, 0x01, b't', // topic name "t"
        ]);
        bytes
    }

    #[test]
    fn incomplete_reports_the_missing_bytes() {
        assert_eq!(
            decode(&[], V3_1_1, MAX_PACKET_SIZE),
            // Every packet has at least a type byte and a length byte.
            Err(DecodeError::Incomplete { needed: 2 })
        );
        assert_eq!(
            decode(&[0x30, 0x82], V3_1_1, MAX_PACKET_SIZE),
            // The remaining length is not complete yet.
            Err(DecodeError::Incomplete { needed: 1 })
        );
        let bytes = publish_with_two_byte_length();
        assert_eq!(
            decode(&bytes[..3], V3_1_1, MAX_PACKET_SIZE),
            Err(DecodeError::Incomplete { needed: 130 })
        );
        assert_eq!(
            decode(&bytes[..132], V3_1_1, MAX_PACKET_SIZE),
            Err(DecodeError::Incomplete { needed: 1 })
        );
        for version in [V3_1, V3_1_1, V5] {
            assert_incomplete_prefixes(&bytes, version);
        }
        assert_eq!(
            DecodeError::Incomplete { needed: 1 }.reason_code(),
            ReasonCode::Success
        );
        assert!(DecodeError::Incomplete { needed: 1 }.is_incomplete());
    }

    #[test]
    fn max_packet_size_is_enforced_from_the_fixed_header() {
        let bytes = publish_with_two_byte_length();
        let too_large = DecodeError::PacketTooLarge {
            size: 133,
            max: 132,
        };
        // Rejected as soon as the fixed header is readable, before the body arrives.
        assert_eq!(decode(&bytes[..3], V3_1_1, 132), Err(too_large));
        assert_eq!(decode(&bytes, V3_1_1, 132), Err(too_large));
        assert_eq!(too_large.reason_code(), ReasonCode::PacketTooLarge);
        // Before the length is complete the size is not known yet.
        assert_eq!(
            decode(&bytes[..2], V3_1_1, 132),
            Err(DecodeError::Incomplete { needed: 1 })
        );
        // The limit counts the fixed header and is inclusive.
        assert_eq!(
            decode(&bytes[..3], V3_1_1, 133),
            Err(DecodeError::Incomplete { needed: 130 })
        );
        assert!(decode(&bytes, V3_1_1, 133).is_ok());
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], V5, MAX_PACKET_SIZE - 1),
            Err(DecodeError::PacketTooLarge {
                size: MAX_PACKET_SIZE,
                max: MAX_PACKET_SIZE - 1
            })
        );
        // A two-byte PINGREQ against a limit of 1.
        assert_eq!(
            decode(&PINGREQ_BYTES, V3_1_1, 1),
            Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
        );
    }

    #[test]
    fn decode_takes_one_frame_from_a_stream() {
        let stream = [
            0xC0, 0x00, // PINGREQ
            0x40, 0x02, 0x00, 0x05, // PUBACK, packet identifier 5
            0xD0, // first byte of a PINGRESP
        ];
        let (first, used) = decode(&stream, V3_1_1, MAX_PACKET_SIZE).unwrap();
        assert_eq!((first, used), (Packet::PingReq, 2));
        let (second, used2) = decode(&stream[used..], V3_1_1, MAX_PACKET_SIZE).unwrap();
        assert_eq!((second, used2), (Packet::PubAck(Ack::new(pid(5))), 4));
        assert_eq!(
            decode(&stream[used + used2..], V3_1_1, MAX_PACKET_SIZE),
            Err(DecodeError::Incomplete { needed: 1 })
        );
    }

    #[test]
    fn encode_refuses_what_the_protocol_cannot_express() {
        static BIG: [u8; 65_536] = [b'a'; 65_536];
        let longest = core::str::from_utf8(&BIG[..65_535]).unwrap();
        let too_long = core::str::from_utf8(&BIG).unwrap();
        let publish = |topic| {
            Packet::Publish(Publish {
                dup: false,
                qos_pid: QoSPid::AtMostOnce,
                retain: false,
                topic,
                properties: Properties::empty(),
                payload: &[],
            })
        };
        // 3.1.1 §1.5.3, 5.0 §1.5.4: a string has a two-byte length, so 65 535 bytes at most.
        let mut buf = [0u8; 4];
        assert_eq!(publish(longest).encoded_len(V3_1_1), 1 + 3 + 2 + 65_535);
        assert_eq!(
            publish(longest).encode(V3_1_1, &mut buf),
            Err(EncodeError::InsufficientSize {
                required: 1 + 3 + 2 + 65_535
            })
        );
        assert_eq!(
            publish(too_long).encode(V3_1_1, &mut buf),
            Err(EncodeError::TooLarge)
        );
        // 5.0 §1.5.5: the remaining length is at most 268 435 455. A user property of two
        // longest strings takes 131 075 bytes; 2 048 of them do not fit, 2 047 do.
        let props = [Property::UserProperty(longest, longest); 2048];
        let disconnect = |n: usize| {
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::Success,
                properties: Properties::new(&props[..n]),
            })
        };
        let fits = 2047 * 131_075;
        assert_eq!(disconnect(2047).encoded_len(V5), 1 + 4 + 1 + 4 + fits);
        assert_eq!(
            disconnect(2047).encode(V5, &mut buf),
            Err(EncodeError::InsufficientSize {
                required: 1 + 4 + 1 + 4 + fits
            })
        );
        assert_eq!(
            disconnect(2048).encode(V5, &mut buf),
            Err(EncodeError::TooLarge)
        );
        assert_eq!(buf, [0; 4]);
    }
}
