//! MQTT 5.0 enhanced authentication (§4.12): a CONNECT that names an Authentication
//! Method starts an exchange of AUTH packets decided by [`Hooks::authenticate_enhanced`];
//! a connected client can re-authenticate the same way (AUTH 0x19).
//!
//! While the exchange runs the CONNECT is kept, encoded, in a blob; once the hook says
//! Success it is read back (through the broker's scratch buffer, so nothing borrows the
//! blob store while the session is set up) and processed as if it had just arrived.

use super::connection::Phase;
use super::hooks::{AUTH_RESPONSE_MAX, AuthOutcome, AuthStep};
use super::transmit::ControlKind;
use super::{Broker, BrokerStorage, ConnectionId, Hooks};
use crate::blob::{BlobId, BlobStore};
use crate::codec::{
    Auth, Connect, Packet, PacketType, Property, ProtocolVersion, ReasonCode, decode,
};
use crate::storage::Storage;
use crate::time::Instant;

/// What the authentication step of CONNECT decided.
pub(super) enum ConnectAuth {
    /// The CONNECT names no Authentication Method.
    NotRequested,
    /// Authenticated: CONNACK carries the method and, if any, the final data (blobs).
    Accepted(BlobId, Option<BlobId>),
    /// An AUTH exchange is under way, or the connection was refused.
    Stopped,
}

fn method_of<'a>(connect: &Connect<'a>) -> Option<&'a str> {
    connect.properties.iter().find_map(|p| match p {
        Property::AuthenticationMethod(m) => Some(m),
        _ => None,
    })
}

fn data_of<'a>(properties: &crate::codec::Properties<'a>) -> Option<&'a [u8]> {
    properties.iter().find_map(|p| match p {
        Property::AuthenticationData(d) => Some(d),
        _ => None,
    })
}

/// A refusal code CONNACK can carry.
fn connack_code(code: ReasonCode) -> ReasonCode {
    if code.is_error() && code.is_valid_for(PacketType::ConnAck) {
        code
    } else {
        ReasonCode::NotAuthorized
    }
}

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// Runs the first step of enhanced authentication for a CONNECT, if it asks for one.
    pub(super) fn connect_auth(
        &mut self,
        id: ConnectionId,
        connect: &Connect<'_>,
        client_id: &str,
        now: Instant,
    ) -> ConnectAuth {
        if let Some((method, data)) = self.auth_replay.take() {
            return ConnectAuth::Accepted(method, data);
        }
        let Some(method) = method_of(connect).filter(|_| connect.protocol.is_v5()) else {
            return ConnectAuth::NotRequested;
        };
        let mut response = [0u8; AUTH_RESPONSE_MAX];
        let step = AuthStep {
            client_id,
            username: connect.username,
            method,
            data: data_of(&connect.properties),
            reauthenticate: false,
        };
        match self.hooks.authenticate_enhanced(&step, &mut response) {
            AuthOutcome::Fail(code) => {
                self.refuse_v5(id, connack_code(code), now);
                ConnectAuth::Stopped
            }
            AuthOutcome::Success { data_len } => {
                // The connection keeps the method: re-authentication must use the same.
                let kept = self.blobs.insert_copy(method.as_bytes()).ok();
                if let Some(conn) = self.connection_mut(id) {
                    conn.auth_method = kept;
                }
                match self.auth_blobs(method, &response[..data_len.min(AUTH_RESPONSE_MAX)]) {
                    Some((m, d)) => ConnectAuth::Accepted(m, d),
                    None => {
                        self.refuse_v5(id, ReasonCode::QuotaExceeded, now);
                        ConnectAuth::Stopped
                    }
                }
            }
            AuthOutcome::Continue { data_len } => {
                let data = &response[..data_len.min(AUTH_RESPONSE_MAX)];
                if self
                    .suspend_connect(id, connect, method, data, now)
                    .is_none()
                {
                    self.refuse_v5(id, ReasonCode::QuotaExceeded, now);
                }
                ConnectAuth::Stopped
            }
        }
    }

    fn refuse_v5(&mut self, id: ConnectionId, code: ReasonCode, now: Instant) {
        self.stats.protocol_errors += u64::from(code == ReasonCode::ProtocolError);
        let info = super::transmit::ConnAckInfo {
            code,
            ..Default::default()
        };
        if let Some(c) = self.connection_mut(id) {
            c.protocol = ProtocolVersion::V5;
        }
        self.push_control(id, ControlKind::ConnAck(info), now);
        self.close_silently(id, code, now);
    }

    /// Copies the method and response data into blobs for a CONNACK or AUTH.
    fn auth_blobs(&mut self, method: &str, data: &[u8]) -> Option<(BlobId, Option<BlobId>)> {
        let method = self.blobs.insert_copy(method.as_bytes()).ok()?;
        if data.is_empty() {
            return Some((method, None));
        }
        match self.blobs.insert_copy(data) {
            Ok(data) => Some((method, Some(data))),
            Err(_) => {
                self.blobs.remove(method);
                None
            }
        }
    }

    /// Keeps the CONNECT and sends AUTH 0x18 with the hook's data.
    fn suspend_connect(
        &mut self,
        id: ConnectionId,
        connect: &Connect<'_>,
        method: &str,
        data: &[u8],
        now: Instant,
    ) -> Option<()> {
        let packet = Packet::from(connect);
        let len = packet.encoded_len(ProtocolVersion::V5);
        let stored = self.blobs.insert(len, |out| {
            let _ = packet.encode(ProtocolVersion::V5, out);
        });
        let stored = stored.ok()?;
        let Some(method_blob) = self.blobs.insert_copy(method.as_bytes()).ok() else {
            self.blobs.remove(stored);
            return None;
        };
        if let Some(conn) = self.connection_mut(id) {
            conn.protocol = ProtocolVersion::V5;
            conn.phase = Phase::Authenticating;
            conn.pending_connect = Some(stored);
            conn.auth_method = Some(method_blob);
        }
        self.send_auth(id, ReasonCode::ContinueAuthentication, data, now);
        Some(())
    }

    fn send_auth(&mut self, id: ConnectionId, code: ReasonCode, data: &[u8], now: Instant) {
        let data = if data.is_empty() {
            None
        } else {
            self.blobs.insert_copy(data).ok()
        };
        self.push_control(id, ControlKind::Auth(code, data), now);
    }

    /// An AUTH packet from the client: the next step of the CONNECT exchange, or a
    /// re-authentication of a connected client.
    pub(super) fn on_auth(&mut self, id: ConnectionId, auth: &Auth<'_>, now: Instant) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        let phase = conn.phase;
        let method_blob = conn.auth_method;
        let method = method_blob
            .and_then(|b| self.blobs.get(b))
            .and_then(|b| core::str::from_utf8(b).ok());
        let sent = auth.properties.iter().find_map(|p| match p {
            Property::AuthenticationMethod(m) => Some(m),
            _ => None,
        });
        let expected = match phase {
            Phase::Authenticating => ReasonCode::ContinueAuthentication,
            _ => ReasonCode::ReAuthenticate,
        };
        let in_reauth =
            phase == Phase::Connected && self.connection(id).is_some_and(|c| c.reauthenticating);
        let code_ok = auth.reason_code == expected
            || (in_reauth && auth.reason_code == ReasonCode::ContinueAuthentication);
        // §4.12: AUTH only with the method of this connection's authentication, and with
        // the code the exchange expects; anything else is a Protocol Error.
        let Some(method) = method.filter(|m| Some(*m) == sent && code_ok) else {
            return match phase {
                Phase::Authenticating => self.refuse_v5(id, ReasonCode::ProtocolError, now),
                _ => {
                    self.stats.protocol_errors += 1;
                    self.close(id, ReasonCode::ProtocolError, now)
                }
            };
        };
        // Field by field, so the hook can be borrowed mutably next to these.
        let conn = self.connections.get(id.slot);
        let (client_id, username) = match phase {
            Phase::Authenticating => {
                let held = conn
                    .and_then(|c| c.pending_connect)
                    .and_then(|b| self.blobs.get(b));
                match held.and_then(|b| decode(b, ProtocolVersion::V5, usize::MAX).ok()) {
                    Some((Packet::Connect(c), _)) => {
                        let c = c.get();
                        (Some(c.client_id), c.username)
                    }
                    _ => (None, None),
                }
            }
            _ => {
                let s = conn
                    .and_then(|c| c.session.get())
                    .and_then(|h| self.sessions.get(h));
                (s.map(|s| s.client_id()), s.and_then(|s| s.username()))
            }
        };
        let step = AuthStep {
            client_id: client_id.unwrap_or(""),
            username,
            method,
            data: data_of(&auth.properties),
            reauthenticate: phase == Phase::Connected,
        };
        let mut response = [0u8; AUTH_RESPONSE_MAX];
        let outcome = self.hooks.authenticate_enhanced(&step, &mut response);
        let data_len = match outcome {
            AuthOutcome::Success { data_len } | AuthOutcome::Continue { data_len } => {
                data_len.min(AUTH_RESPONSE_MAX)
            }
            AuthOutcome::Fail(_) => 0,
        };
        let data = &response[..data_len];
        match (phase, outcome) {
            (_, AuthOutcome::Continue { .. }) => {
                if let Some(c) = self.connection_mut(id) {
                    c.reauthenticating = phase == Phase::Connected;
                }
                self.send_auth(id, ReasonCode::ContinueAuthentication, data, now);
            }
            (Phase::Authenticating, AuthOutcome::Fail(code)) => {
                self.refuse_v5(id, connack_code(code), now)
            }
            (_, AuthOutcome::Fail(code)) => {
                let code = if code.is_valid_for(PacketType::Disconnect) && code.is_error() {
                    code
                } else {
                    ReasonCode::NotAuthorized
                };
                self.close(id, code, now);
            }
            (Phase::Authenticating, AuthOutcome::Success { .. }) => {
                self.resume_connect(id, data, now)
            }
            (_, AuthOutcome::Success { .. }) => {
                if let Some(c) = self.connection_mut(id) {
                    c.reauthenticating = false;
                }
                self.send_auth(id, ReasonCode::Success, data, now);
            }
        }
    }

    /// The exchange succeeded: process the held CONNECT.
    fn resume_connect(&mut self, id: ConnectionId, data: &[u8], now: Instant) {
        let Some(conn) = self.connection_mut(id) else {
            return;
        };
        let Some(stored) = conn.pending_connect.take() else {
            return;
        };
        conn.phase = Phase::AwaitingConnect;
        let method = conn.auth_method;
        let mut scratch = core::mem::take(&mut self.scratch);
        scratch.truncate(0);
        let copied = self
            .blobs
            .get(stored)
            .is_some_and(|bytes| bytes.iter().all(|b| scratch.push(*b).is_ok()));
        self.blobs.remove(stored);
        let replay = match method.and_then(|m| self.blobs.get(m)).map(<[u8]>::len) {
            Some(_) if copied => {
                let method_copy = method.and_then(|m| {
                    let len = self.blobs.get(m)?.len();
                    self.blobs.insert_prefixed(m, len, len, |_| {}).ok()
                });
                let data_copy = if data.is_empty() {
                    None
                } else {
                    self.blobs.insert_copy(data).ok()
                };
                method_copy.map(|m| (m, data_copy))
            }
            _ => None,
        };
        match (
            replay,
            decode(scratch.as_slice(), ProtocolVersion::V5, usize::MAX),
        ) {
            (Some(result), Ok((Packet::Connect(connect), _))) => {
                self.auth_replay = Some(result);
                self.on_connect(id, &connect.get(), now);
                // Not consumed if on_connect refused before reaching authentication.
                if let Some((m, d)) = self.auth_replay.take() {
                    self.blobs.remove(m);
                    if let Some(d) = d {
                        self.blobs.remove(d);
                    }
                }
            }
            _ => self.refuse_v5(id, ReasonCode::QuotaExceeded, now),
        }
        scratch.truncate(0);
        self.scratch = scratch;
    }
}
