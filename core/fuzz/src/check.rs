//! Checks both targets make on every packet they hold: the encoder's contract, and that a
//! packet's lists give the same packet whether they are decoded wire bytes or the
//! caller's own items.
//!
//! A [`Packet`] only borrows a CONNECT's fields ([`Packet::from`] takes `&Connect`), so a
//! packet rebuilt here is a [`Built`], which holds them, and lends out
//! [`Built::packet`].

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

/// A packet in the form a caller builds to send, held by value: a CONNECT as its
/// [`Connect`] fields, any other packet as it is. [`Built::packet`] lends it out.
#[derive(Debug, Clone, Copy)]
pub struct Built<'a>(BuiltRepr<'a>);

#[derive(Debug, Clone, Copy)]
enum BuiltRepr<'a> {
    Connect(Connect<'a>),
    /// Never a CONNECT: `From<Packet>` takes its fields out.
    Other(Packet<'a>),
}

impl Built<'_> {
    /// The packet, borrowing the CONNECT fields from `self`.
    pub fn packet(&self) -> Packet<'_> {
        match &self.0 {
            BuiltRepr::Connect(connect) => Packet::from(connect),
            BuiltRepr::Other(packet) => *packet,
        }
    }
}

impl<'a> From<Connect<'a>> for Built<'a> {
    fn from(connect: Connect<'a>) -> Self {
        Self(BuiltRepr::Connect(connect))
    }
}

impl<'a> From<Packet<'a>> for Built<'a> {
    fn from(packet: Packet<'a>) -> Self {
        match packet {
            Packet::Connect(connect) => connect.get().into(),
            other => Self(BuiltRepr::Other(other)),
        }
    }
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
                let p = p.get();
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

    /// `packet` (a [`Packet`] or a [`Built`]) with its lists replaced by these items.
    pub fn apply<'s>(&'s self, packet: impl Into<Built<'a>>) -> Built<'s>
    where
        'a: 's,
    {
        let properties: List<'s, Property<'s>> = List::new(&self.properties);
        let packet = match packet.into().0 {
            BuiltRepr::Connect(p) => {
                return Built::from(Connect {
                    properties,
                    will: p.will.map(|will| Will {
                        properties: List::new(&self.will_properties),
                        ..will
                    }),
                    ..p
                });
            }
            BuiltRepr::Other(packet) => packet,
        };
        Built::from(match packet {
            Packet::Connect(_) => unreachable!("a Built holds a CONNECT as its fields"),
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
        })
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
