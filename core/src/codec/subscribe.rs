//! SUBSCRIBE (§3.8), SUBACK (§3.9), UNSUBSCRIBE (§3.10) and UNSUBACK (§3.11).
//!
//! Topic filters are only checked as UTF-8 strings here: a filter with misplaced
//! wildcards is refused per filter in the SUBACK (0x8F), not by closing the connection,
//! so that judgement belongs to the broker's topic module.

use super::error::DecodeError;
use super::list::{List, list_item};
use super::properties::{Properties, Scope, read_properties, write_properties};
use super::reason::ReasonCode;
use super::types::{PacketId, ProtocolVersion, SubscriptionOptions};
use super::wire::{Reader, Writer};
use super::{PacketType, Size, read_packet_id, read_reason_code};

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscription<'a> {
    /// The topic filter, possibly with wildcards or a `$share/` prefix.
    pub filter: &'a str,
    /// Maximum QoS and, in 5.0, no-local, retain-as-published and retain handling.
    pub options: SubscriptionOptions,
}

impl<'a> Subscription<'a> {
    /// A subscription to `filter` with `options`.
    pub const fn new(filter: &'a str, options: SubscriptionOptions) -> Self {
        Self { filter, options }
    }

    fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let filter = r.str()?;
        let options = SubscriptionOptions::from_byte(r.u8()?, version)?;
        Ok(Self { filter, options })
    }

    /// Re-reads validated bytes; 3.x options bytes are valid 5.0 ones with defaults.
    fn read_validated(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::read(r, ProtocolVersion::V5)
    }
}

list_item!(Subscription<'a>, Subscription::read_validated);

fn read_filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    r.str()
}

list_item!(&'a str, read_filter);

fn read_any_reason_code(r: &mut Reader<'_>) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    ReasonCode::from_u8(code).ok_or(DecodeError::InvalidReasonCode {
        packet: PacketType::SubAck,
        code,
    })
}

list_item!(ReasonCode, read_any_reason_code);

/// Reads a list that fills the rest of the packet, validating every item; returns the
/// list over the validated bytes and how many items it holds.
fn read_rest<'a, T: super::ListItem<'a>>(
    r: &mut Reader<'a>,
    mut read_one: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<(List<'a, T>, usize), DecodeError> {
    let bytes = r.rest();
    let mut items = Reader::new(bytes);
    let mut count = 0;
    while !items.is_empty() {
        read_one(&mut items)?;
        count += 1;
    }
    Ok((List::from_wire(bytes), count))
}

/// A SUBSCRIBE packet (§3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribe<'a> {
    /// Packet identifier, echoed in the SUBACK.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (5.0 only): a Subscription Identifier and user properties.
    pub properties: Properties<'a>,
    /// The topic filters with their options; never empty on the wire.
    pub subscriptions: List<'a, Subscription<'a>>,
}

impl<'a> Subscribe<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            read_properties(r, Scope::SUBSCRIBE)?
        } else {
            Properties::empty()
        };
        let (subscriptions, count) = read_rest(r, |r| Subscription::read(r, version))?;
        if count == 0 {
            // [MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1): at least one filter.
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            subscriptions,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        let mut size = Size {
            len: 2,
            too_large: false,
        };
        if version.is_v5() {
            size.properties(&self.properties);
        }
        for sub in &self.subscriptions {
            size.field(sub.filter.len());
            size.add(1);
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
        for sub in &self.subscriptions {
            w.str(sub.filter);
            w.u8(sub.options.to_byte(version));
        }
    }
}

/// A SUBACK packet (§3.9): one reason code per filter, in order.
///
/// Before 5.0 the codes are Granted QoS 0/1/2 and Failure (0x80); encoding any 5.0 error
/// code for 3.x sends 0x80.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubAck<'a> {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: PacketId,
    /// SUBACK properties (5.0 only).
    pub properties: Properties<'a>,
    /// One code per topic filter of the SUBSCRIBE.
    pub reason_codes: List<'a, ReasonCode>,
}

impl<'a> SubAck<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            read_properties(r, Scope::SUBACK)?
        } else {
            Properties::empty()
        };
        let (reason_codes, _) = read_rest(r, |r| {
            if version.is_v5() {
                read_reason_code(r, PacketType::SubAck)
            } else {
                // §3.9.3 of 3.1.1: 0x00, 0x01, 0x02 and 0x80 only.
                match r.u8()? {
                    0x00 => Ok(ReasonCode::Success),
                    0x01 => Ok(ReasonCode::GrantedQoS1),
                    0x02 => Ok(ReasonCode::GrantedQoS2),
                    0x80 => Ok(ReasonCode::UnspecifiedError),
                    code => Err(DecodeError::InvalidReasonCode {
                        packet: PacketType::SubAck,
                        code,
                    }),
                }
            }
        })?;
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        let mut size = Size {
            len: 2,
            too_large: false,
        };
        if version.is_v5() {
            size.properties(&self.properties);
        }
        size.add(self.reason_codes.len());
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
        for code in &self.reason_codes {
            let byte = if !version.is_v5() && code.is_error() {
                0x80
            } else {
                code.value()
            };
            w.u8(byte);
        }
    }
}

/// An UNSUBSCRIBE packet (§3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Unsubscribe<'a> {
    /// Packet identifier, echoed in the UNSUBACK.
    pub packet_id: PacketId,
    /// UNSUBSCRIBE properties (5.0 only): user properties.
    pub properties: Properties<'a>,
    /// The topic filters to remove; never empty on the wire.
    pub filters: List<'a, &'a str>,
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            read_properties(r, Scope::UNSUBSCRIBE)?
        } else {
            Properties::empty()
        };
        let (filters, count) = read_rest(r, read_filter)?;
        if count == 0 {
            // [MQTT-3.10.3-2]: at least one filter.
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        let mut size = Size {
            len: 2,
            too_large: false,
        };
        if version.is_v5() {
            size.properties(&self.properties);
        }
        for filter in &self.filters {
            size.field(filter.len());
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
        }
        for filter in &self.filters {
            w.str(filter);
        }
    }
}

/// An UNSUBACK packet (§3.11). Before 5.0 it carries only the packet identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnsubAck<'a> {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: PacketId,
    /// UNSUBACK properties (5.0 only).
    pub properties: Properties<'a>,
    /// One code per topic filter (5.0 only; empty before).
    pub reason_codes: List<'a, ReasonCode>,
}

impl<'a> UnsubAck<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r)?;
        if !version.is_v5() {
            return Ok(Self {
                packet_id,
                properties: Properties::empty(),
                reason_codes: List::empty(),
            });
        }
        let properties = read_properties(r, Scope::UNSUBACK)?;
        let (reason_codes, _) = read_rest(r, |r| read_reason_code(r, PacketType::UnsubAck))?;
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        let mut size = Size {
            len: 2,
            too_large: false,
        };
        if version.is_v5() {
            size.properties(&self.properties);
            size.add(self.reason_codes.len());
        }
        size
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        w.u16(self.packet_id.get());
        if version.is_v5() {
            write_properties(w, &self.properties);
            for code in &self.reason_codes {
                w.u8(code.value());
            }
        }
    }
}
