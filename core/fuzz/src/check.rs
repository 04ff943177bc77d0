//! Checks both targets make on every packet they hold: the encoder's contract, and that a
//! packet's lists give the same packet whether they are decoded wire bytes or the
//! caller's own items.

use fulmar_core::codec::{
    Connect, EncodeError, List, Packet, Property, ProtocolVersion, ReasonCode, Subscription, Will,
};

/// Bytes past the encoded length that must stay untouched.
const SLACK: usize = 8;

/// Two fill patterns, so a write of the fill value itself cannot go unnoticed.
const FILLS: [u8; 2] = [0x00, 0xFF];

/// Encodes `packet` for `version`, checking [`Packet::encode`]'s contract on the way:
///
/// - with a buffer of at least [`Packet::encoded_len`] bytes it writes exactly that many
///   and nothing after them, or fails with an error other than `InsufficientSize`;
/// - with any shorter buffer it fails with `InsufficientSize { required: encoded_len }`;
/// - whenever it fails, the buffer is untouched.
pub fn encode(packet: &Packet<'_>, version: ProtocolVersion) -> Result<Vec<u8>, EncodeError> {
    let len = packet.encoded_len(version);
    let mut encoded: Option<Vec<u8>> = None;
    for fill in FILLS {
        let mut buf = vec![fill; len + SLACK];
        match packet.encode(version, &mut buf) {
            Ok(written) => {
                assert_eq!(written, len, "encode and encoded_len disagree: {packet:?}");
                assert!(
                    buf[len..].iter().all(|&b| b == fill),
                    "encode wrote past encoded_len: {packet:?}"
                );
                buf.truncate(len);
                if let Some(first) = &encoded {
                    assert_eq!(*first, buf, "encoding depends on the buffer's old contents");
                }
                encoded = Some(buf);
            }
            Err(EncodeError::InsufficientSize { required }) => {
                panic!("InsufficientSize {{ {required} }} from a buffer of {len}+ bytes");
            }
            Err(e) => {
                assert!(buf.iter().all(|&b| b == fill), "failed encode wrote: {e:?}");
                return Err(e);
            }
        }
        // The first byte is always written, so `len` is at least 1.
        let mut shorter = [0, len / 2, len - 1];
        shorter.sort_unstable();
        for short in shorter {
            let mut buf = vec![fill; short];
            assert_eq!(
                packet.encode(version, &mut buf),
                Err(EncodeError::InsufficientSize { required: len }),
                "buffer of {short} for a packet of {len}: {packet:?}"
            );
            assert!(
                buf.iter().all(|&b| b == fill),
                "InsufficientSize but the buffer was written"
            );
        }
    }
    Ok(encoded.unwrap_or_default())
}

/// The lists of a packet (properties, will properties, subscriptions, topic filters and
/// reason codes) as caller-owned items.
///
/// [`Lists::apply`] puts them into a packet in place of its own lists: applied to a
/// decoded packet, this gives the same packet in the form a caller builds to send.
#[derive(Debug, Default, Clone)]
pub struct Lists<'a> {
    /// The packet's properties.
    pub properties: Vec<Property<'a>>,
    /// The will properties of a CONNECT.
    pub will_properties: Vec<Property<'a>>,
    /// The topic filters and options of a SUBSCRIBE.
    pub subscriptions: Vec<Subscription<'a>>,
    /// The topic filters of an UNSUBSCRIBE.
    pub filters: Vec<&'a str>,
    /// The reason codes of a SUBACK or UNSUBACK.
    pub reason_codes: Vec<ReasonCode>,
}

impl<'a> Lists<'a> {
    /// Collects the lists of `packet`.
    pub fn of(packet: &Packet<'a>) -> Self {
        let mut lists = Self::default();
        match packet {
            Packet::Connect(p) => {
                lists.properties = p.properties.iter().collect();
                if let Some(will) = &p.will {
                    lists.will_properties = will.properties.iter().collect();
                }
            }
            Packet::ConnAck(p) => lists.properties = p.properties.iter().collect(),
            Packet::Publish(p) => lists.properties = p.properties.iter().collect(),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                lists.properties = p.properties.iter().collect();
            }
            Packet::Subscribe(p) => {
                lists.properties = p.properties.iter().collect();
                lists.subscriptions = p.subscriptions.iter().collect();
            }
            Packet::SubAck(p) => {
                lists.properties = p.properties.iter().collect();
                lists.reason_codes = p.reason_codes.iter().collect();
            }
            Packet::Unsubscribe(p) => {
                lists.properties = p.properties.iter().collect();
                lists.filters = p.filters.iter().collect();
            }
            Packet::UnsubAck(p) => {
                lists.properties = p.properties.iter().collect();
                lists.reason_codes = p.reason_codes.iter().collect();
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(p) => lists.properties = p.properties.iter().collect(),
            Packet::Auth(p) => lists.properties = p.properties.iter().collect(),
        }
        lists
    }

    /// `packet` with its lists replaced by these items.
    pub fn apply<'s>(&'s self, packet: &Packet<'a>) -> Packet<'s>
    where
        'a: 's,
    {
        let properties: List<'s, Property<'s>> = List::new(&self.properties);
        match *packet {
            Packet::Connect(p) => Packet::Connect(Connect {
                properties,
                will: p.will.map(|will| Will {
                    properties: List::new(&self.will_properties),
                    ..will
                }),
                ..p
            }),
            Packet::ConnAck(mut p) => {
                p.properties = properties;
                Packet::ConnAck(p)
            }
            Packet::Publish(mut p) => {
                p.properties = properties;
                Packet::Publish(p)
            }
            Packet::PubAck(mut p) => {
                p.properties = properties;
                Packet::PubAck(p)
            }
            Packet::PubRec(mut p) => {
                p.properties = properties;
                Packet::PubRec(p)
            }
            Packet::PubRel(mut p) => {
                p.properties = properties;
                Packet::PubRel(p)
            }
            Packet::PubComp(mut p) => {
                p.properties = properties;
                Packet::PubComp(p)
            }
            Packet::Subscribe(mut p) => {
                p.properties = properties;
                p.subscriptions = List::new(&self.subscriptions);
                Packet::Subscribe(p)
            }
            Packet::SubAck(mut p) => {
                p.properties = properties;
                p.reason_codes = List::new(&self.reason_codes);
                Packet::SubAck(p)
            }
            Packet::Unsubscribe(mut p) => {
                p.properties = properties;
                p.filters = List::new(&self.filters);
                Packet::Unsubscribe(p)
            }
            Packet::UnsubAck(mut p) => {
                p.properties = properties;
                p.reason_codes = List::new(&self.reason_codes);
                Packet::UnsubAck(p)
            }
            Packet::PingReq => Packet::PingReq,
            Packet::PingResp => Packet::PingResp,
            Packet::Disconnect(mut p) => {
                p.properties = properties;
                Packet::Disconnect(p)
            }
            Packet::Auth(mut p) => {
                p.properties = properties;
                Packet::Auth(p)
            }
        }
    }
}

/// For a decoded packet: checks that iterating each list of topic filters or reason codes
/// accounts for every byte the decoder validated, so no item is silently dropped. (These
/// lists hold no variable byte integers, so their size follows from the items alone.)
pub fn lists_cover_wire_bytes(packet: &Packet<'_>) {
    fn check<'a, T: fulmar_core::codec::ListItem<'a>>(
        list: &List<'a, T>,
        size: impl Fn(T) -> usize,
    ) {
        if let Some(bytes) = list.wire_bytes() {
            let items: usize = list.iter().map(size).sum();
            assert_eq!(items, bytes.len(), "list iteration skipped wire bytes");
        }
    }
    match packet {
        Packet::Subscribe(p) => check(&p.subscriptions, |s| 2 + s.filter.len() + 1),
        Packet::Unsubscribe(p) => check(&p.filters, |f| 2 + f.len()),
        Packet::SubAck(p) => check(&p.reason_codes, |_| 1),
        Packet::UnsubAck(p) => check(&p.reason_codes, |_| 1),
        _ => {}
    }
}
