//! The connection side of authentication: a connection's task holds its bytes back until
//! its first packet is whole, and when that is a CONNECT, has its credentials checked off
//! the broker's task before passing it on (see [the module docs](super) for why).

use std::sync::Arc;

use fulmar_core::broker::ConnectionId;
use fulmar_core::codec::{DecodeError, Packet, ProtocolVersion, decode};

use super::Auth;

/// One connection's way in. Its task passes every read through [`Admission::admit`].
#[derive(Debug)]
pub(crate) struct Admission {
    auth: Arc<Auth>,
    /// The shard and the connection there.
    id: (usize, ConnectionId),
    /// The TLS client certificate's identity, when the listener takes it as user name.
    identity: Option<String>,
    /// The bytes held back while the first packet is incomplete; `None` once it has passed
    /// (or when nothing needs checking, so the admission costs nothing).
    first: Option<Vec<u8>>,
}

impl Admission {
    /// The admission of connection `id`. `identity` is the name a verified TLS client
    /// certificate gives it (its subject CN, else its first SAN), when its listener takes
    /// that as the user name, as Mosquitto's `use_identity_as_username` does: the session
    /// runs under that name, and the CONNECT's user name and password are not used.
    pub(crate) fn new(
        auth: Arc<Auth>,
        id: (usize, ConnectionId),
        identity: Option<String>,
    ) -> Self {
        let holds = auth.checks_passwords() || identity.is_some();
        Self {
            auth,
            id,
            identity,
            first: holds.then(Vec::new),
        }
    }

    /// Takes the bytes of one read and returns what may go to the broker now: `None` while
    /// the first packet is incomplete. Waits while a CONNECT's password is checked.
    pub(crate) async fn admit(&mut self, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let first = match self.first.as_mut() {
            None => return Some(bytes),
            Some(first) if first.is_empty() => {
                *first = bytes;
                first
            }
            Some(first) => {
                first.extend_from_slice(&bytes);
                first
            }
        };
        // The level is only known from the CONNECT itself; the broker also decodes a first
        // packet as 5.0. A packet above the size limit fails at once, so this never holds
        // more than one maximum-size packet.
        let credentials = match decode(first, ProtocolVersion::V5, self.auth.max_packet_size) {
            Err(DecodeError::Incomplete { .. }) => return None,
            Ok((Packet::Connect(connect), _)) => {
                let connect = connect.get();
                Some((
                    connect.username.map(str::to_owned),
                    connect.password.map(<[u8]>::to_vec),
                ))
            }
            // Not a CONNECT, or malformed: the broker refuses it, without asking the hooks.
            _ => None,
        };
        let bytes = self.first.take().unwrap_or_default();
        if let Some((username, password)) = credentials {
            let decision = self
                .auth
                .decide_off_task(self.identity.take(), username.clone(), password)
                .await;
            self.auth.record(self.id, username, decision);
        }
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use fulmar_core::broker::{Broker, Config, Growable};
    use fulmar_core::codec::ReasonCode;

    use super::super::Decision;
    use super::*;

    fn connect_bytes(username: Option<&str>, password: Option<&[u8]>) -> Vec<u8> {
        let mut connect = fulmar_core::sim::connect_packet(ProtocolVersion::V3_1_1, "c", true, 30);
        connect.username = username;
        connect.password = password;
        let packet = Packet::from(&connect);
        let mut buf = vec![0; 256];
        let n = packet.encode(ProtocolVersion::V3_1_1, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn connection() -> ConnectionId {
        let mut broker = Broker::<Growable>::new(Config::default(), 7);
        broker
            .handle_connect(fulmar_core::time::Instant::ZERO)
            .unwrap()
    }

    fn auth_with_alice() -> Arc<Auth> {
        let lines = super::super::tests::user_line("alice", "pw");
        Arc::new(super::super::tests::auth_with(&lines, None))
    }

    #[tokio::test]
    async fn holds_a_split_connect_and_leaves_a_verdict() {
        let auth = auth_with_alice();
        let id = connection();
        let mut admission = Admission::new(auth.clone(), (0, id), None);
        let mut bytes = connect_bytes(Some("alice"), Some(b"pw"));
        bytes.extend_from_slice(&[0xC0, 0x00]); // PINGREQ right behind it
        let (head, tail) = bytes.split_at(5);
        assert_eq!(admission.admit(head.to_vec()).await, None);
        assert_eq!(auth.claim((0, id), Some("alice")), None);
        assert_eq!(admission.admit(tail.to_vec()).await, Some(bytes.clone()));
        assert_eq!(
            auth.claim((0, id), Some("alice")),
            Some(Decision::accept(Some("alice")))
        );
        // Later reads pass straight through.
        assert_eq!(admission.admit(vec![0xC0, 0]).await, Some(vec![0xC0, 0]));
    }

    #[tokio::test]
    async fn a_wrong_password_is_refused_and_not_a_connect_passes_unjudged() {
        let auth = auth_with_alice();
        let id = connection();
        let mut admission = Admission::new(auth.clone(), (0, id), None);
        let bytes = connect_bytes(Some("alice"), Some(b"guess"));
        assert_eq!(admission.admit(bytes.clone()).await, Some(bytes));
        let decision = auth.claim((0, id), Some("alice")).unwrap();
        assert_eq!(decision.code, ReasonCode::BadUserNameOrPassword);

        let mut other = Admission::new(auth.clone(), (0, id), None);
        assert_eq!(other.admit(vec![0xC0, 0]).await, Some(vec![0xC0, 0]));
        assert_eq!(auth.claim((0, id), None), None);
    }

    #[tokio::test]
    async fn nothing_is_held_without_a_password_file_or_identity() {
        let auth = Arc::new(Auth::open());
        let id = connection();
        let mut admission = Admission::new(auth.clone(), (0, id), None);
        assert_eq!(admission.admit(vec![0x10]).await, Some(vec![0x10]));
        let mut with_identity = Admission::new(auth.clone(), (0, id), Some("device-7".into()));
        let bytes = connect_bytes(None, None);
        assert_eq!(with_identity.admit(bytes.clone()).await, Some(bytes));
        assert_eq!(
            auth.claim((0, id), None),
            Some(Decision::accept(Some("device-7")))
        );
    }
}
