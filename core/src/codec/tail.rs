//! DISCONNECT (§3.14) and AUTH (§3.15): the packets that end or re-check a session.
//! (PINGREQ and PINGRESP have no body and live in [`super::Packet`] directly.)

use super::error::DecodeError;
use super::properties::{Properties, Scope, read_properties, write_properties};
use super::reason::ReasonCode;
use super::types::ProtocolVersion;
use super::wire::{Reader, Writer};
use super::{PacketType, Size, read_reason_code};

/// A DISCONNECT packet (§3.14). Before 5.0 it has no body: the code is always
/// [`ReasonCode::Success`] (normal disconnection) and there are no properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Disconnect<'a> {
    /// Why the connection is closing (5.0).
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0 only): session expiry, reason string, server reference.
    pub properties: Properties<'a>,
}

impl Default for Disconnect<'_> {
    fn default() -> Self {
        Self::new(ReasonCode::Success)
    }
}

impl<'a> Disconnect<'a> {
    /// A DISCONNECT with `reason_code` and no properties.
    pub const fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: Properties::empty(),
        }
    }

    pub(crate) fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let (reason_code, properties) = if version.is_v5() {
            read_code_and_properties(r, PacketType::Disconnect, Scope::DISCONNECT)?
        } else {
            (ReasonCode::Success, Properties::empty())
        };
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn size(&self, version: ProtocolVersion) -> Size {
        if version.is_v5() {
            code_and_properties_size(self.reason_code, &self.properties)
        } else {
            Size::default()
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, version: ProtocolVersion) {
        if version.is_v5() {
            write_code_and_properties(w, self.reason_code, &self.properties);
        }
    }
}

/// An AUTH packet (§3.15, 5.0 only): one step of an extended authentication exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Auth<'a> {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: Properties<'a>,
}

impl<'a> Auth<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let (reason_code, properties) = read_code_and_properties(r, PacketType::Auth, Scope::AUTH)?;
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn size(&self) -> Size {
        code_and_properties_size(self.reason_code, &self.properties)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        write_code_and_properties(w, self.reason_code, &self.properties);
    }
}

/// The 5.0 body shared by DISCONNECT, AUTH and the tail of PUBACK/PUBREC/PUBREL/PUBCOMP: an optional reason code, then optional
/// properties. An empty body means Success with no properties ([MQTT-3.14.2-1] allows
/// omitting the code, [MQTT-3.15.2-1] likewise for AUTH); a lone code means no properties.
pub(crate) fn read_code_and_properties<'a>(
    r: &mut Reader<'a>,
    packet: PacketType,
    scope: Scope,
) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::Success, Properties::empty()));
    }
    let code = read_reason_code(r, packet)?;
    let properties = if r.is_empty() {
        Properties::empty()
    } else {
        read_properties(r, scope)?
    };
    Ok((code, properties))
}

pub(crate) fn code_and_properties_size(code: ReasonCode, properties: &Properties<'_>) -> Size {
    let mut size = Size::default();
    if !properties.is_empty() {
        size.add(1);
        size.properties(properties);
    } else if code != ReasonCode::Success {
        size.add(1);
    }
    size
}

pub(crate) fn write_code_and_properties(
    w: &mut Writer<'_>,
    code: ReasonCode,
    properties: &Properties<'_>,
) {
    if !properties.is_empty() {
        w.u8(code.value());
        write_properties(w, properties);
    } else if code != ReasonCode::Success {
        w.u8(code.value());
    }
}
