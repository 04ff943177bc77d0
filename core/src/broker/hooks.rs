//! Hooks through which a host decides who may connect, publish and subscribe.
//!
//! The broker calls them synchronously; a host with slow checks (a database, a remote
//! service) resolves them before it passes the bytes in, or caches answers.

use super::ConnectionId;
use crate::codec::{ProtocolVersion, QoS, ReasonCode};

/// What a client presents in CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest<'a> {
    /// The transport connection the CONNECT arrived on, so a host that checked the
    /// credentials before handing the bytes in (off its broker task, say) can find its
    /// verdict, or match what it knows about the transport (a TLS client certificate).
    pub connection: ConnectionId,
    /// The client identifier (possibly assigned by the broker).
    pub client_id: &'a str,
    /// The user name, if any.
    pub username: Option<&'a str>,
    /// The password, if any.
    pub password: Option<&'a [u8]>,
    /// The protocol the client speaks.
    pub protocol: ProtocolVersion,
}

/// A connected client, as seen by authorization checks.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The client identifier.
    pub client_id: &'a str,
    /// The user name its session runs under ([`Hooks::session_username`]).
    pub username: Option<&'a str>,
}

/// Authentication and authorization decisions.
pub trait Hooks {
    /// Accept (`Success`) or refuse a connection, with the 5.0 reason code for the CONNACK
    /// (3.x clients get the matching return code).
    fn authenticate(&mut self, request: &ConnectRequest<'_>) -> ReasonCode {
        let _ = request;
        ReasonCode::Success
    }

    /// The user name the session of a client that [`Hooks::authenticate`] just accepted
    /// runs under: what [`ClientInfo::username`] reports to the authorization checks.
    /// The default keeps the one from CONNECT; a host may put another identity in its
    /// place (the name in a TLS client certificate, as Mosquitto's
    /// `use_identity_as_username` does) or drop it.
    fn session_username<'r>(&'r mut self, request: &ConnectRequest<'r>) -> Option<&'r str> {
        request.username
    }

    /// Whether `client` may publish to `topic`. A refusal answers QoS 1/2 with 0x87 Not
    /// authorized (5.0) and drops the message.
    fn authorize_publish(
        &mut self,
        client: &ClientInfo<'_>,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> bool {
        let _ = (client, topic, qos, retain);
        true
    }

    /// One step of 5.0 enhanced authentication, for a client whose CONNECT named an
    /// Authentication Method (and each AUTH after it). Response data goes into `response`
    /// (at most [`AUTH_RESPONSE_MAX`] bytes). The default knows no method: 0x8C.
    fn authenticate_enhanced(&mut self, step: &AuthStep<'_>, response: &mut [u8]) -> AuthOutcome {
        let _ = (step, response);
        AuthOutcome::Fail(ReasonCode::BadAuthenticationMethod)
    }

    /// Whether `client` may subscribe to `filter`; refusals get SUBACK 0x87 (3.x: 0x80).
    fn authorize_subscribe(&mut self, client: &ClientInfo<'_>, filter: &str, qos: QoS) -> bool {
        let _ = (client, filter, qos);
        true
    }

    /// Whether a new client session may start (a CONNECT that resumes none, or a session
    /// restored from storage), on top of this broker's own
    /// [`super::Config::max_sessions`]. A host that runs several brokers under one limit
    /// (shards) counts them here; a refusal answers CONNECT with 0x97 Quota exceeded (3.x:
    /// 3 Server unavailable). Each `true` is matched by one [`Hooks::session_ended`] when
    /// that session ends. Bridges and peers are not counted.
    fn claim_session(&mut self) -> bool {
        true
    }

    /// A session [`Hooks::claim_session`] let start has ended.
    fn session_ended(&mut self) {}
}

/// One step of an MQTT 5.0 enhanced authentication exchange (§4.12).
#[derive(Debug, Clone, Copy)]
pub struct AuthStep<'a> {
    /// The client identifier.
    pub client_id: &'a str,
    /// The user name from CONNECT, if any.
    pub username: Option<&'a str>,
    /// The Authentication Method the client named.
    pub method: &'a str,
    /// The Authentication Data the client sent in this step.
    pub data: Option<&'a [u8]>,
    /// Whether this is a re-authentication of a connected client (AUTH 0x19).
    pub reauthenticate: bool,
}

/// The hook's verdict on one step of enhanced authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated; the first `data_len` bytes of the response buffer go to the client
    /// as Authentication Data (in CONNACK, or AUTH 0x00 when re-authenticating).
    Success {
        /// Bytes of response data written.
        data_len: usize,
    },
    /// Another round: the first `data_len` bytes go out in AUTH 0x18.
    Continue {
        /// Bytes of response data written.
        data_len: usize,
    },
    /// Refused with this reason code (e.g. 0x8C Bad authentication method, 0x87 Not
    /// authorized).
    Fail(ReasonCode),
}

/// Largest Authentication Data a hook can answer with in one step.
pub const AUTH_RESPONSE_MAX: usize = 256;

/// Allows everything: anonymous access, as a zero-configuration broker starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Hooks for AllowAll {}
