//! The core's [`Hooks`], answered from [`Auth`]: the admission's verdict for CONNECT, the
//! ACL for PUBLISH and SUBSCRIBE. Runs on the broker task, so nothing here hashes
//! (except the logged fallback when a verdict is missing).

use std::sync::Arc;

use fulmar_core::broker::{ClientInfo, ConnectRequest, ConnectionId, Hooks};
use fulmar_core::codec::{QoS, ReasonCode};
use tracing::{info, warn};

use super::acl::Client;
use super::{Auth, Credentials};

/// The edge broker's hooks.
#[derive(Debug)]
pub struct EdgeHooks {
    auth: Arc<Auth>,
    /// The session user name of the connection accepted last, for
    /// [`Hooks::session_username`], which the core asks right after accepting.
    accepted: Option<(ConnectionId, Option<String>)>,
}

impl EdgeHooks {
    /// Hooks that decide with `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self {
            auth,
            accepted: None,
        }
    }
}

impl Hooks for EdgeHooks {
    fn authenticate(&mut self, request: &ConnectRequest<'_>) -> ReasonCode {
        let decision = match self.auth.claim(request.connection, request.username) {
            Some(decision) => decision,
            None => {
                if self.auth.checks_passwords() {
                    warn!(
                        client = request.client_id,
                        "checking a password on the broker task (its connection did not \
                         check it first); other clients wait meanwhile"
                    );
                }
                self.auth.decide(Credentials {
                    identity: None,
                    username: request.username,
                    password: request.password,
                })
            }
        };
        if decision.code == ReasonCode::Success {
            self.accepted = Some((request.connection, decision.username));
        } else {
            self.accepted = None;
            info!(
                client = request.client_id,
                user = request.username,
                reason = %decision.code,
                "connection refused"
            );
        }
        decision.code
    }

    fn session_username<'r>(&'r mut self, request: &ConnectRequest<'r>) -> Option<&'r str> {
        match &self.accepted {
            Some((id, username)) if *id == request.connection => username.as_deref(),
            _ => request.username,
        }
    }

    fn authorize_publish(
        &mut self,
        client: &ClientInfo<'_>,
        topic: &str,
        _qos: QoS,
        _retain: bool,
    ) -> bool {
        // The broker's own topics: no client writes there, ACL or not.
        if topic == "$SYS" || topic.starts_with("$SYS/") {
            return false;
        }
        self.auth
            .acl()
            .is_none_or(|acl| acl.may_publish(acl_client(client), topic))
    }

    fn authorize_subscribe(&mut self, client: &ClientInfo<'_>, filter: &str, _qos: QoS) -> bool {
        // A shared subscription reads what its filter matches: `$share/{group}/{filter}`.
        let filter = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_, filter)| filter);
        self.auth
            .acl()
            .is_none_or(|acl| acl.may_subscribe(acl_client(client), filter))
    }
}

fn acl_client<'a>(client: &ClientInfo<'a>) -> Client<'a> {
    Client {
        client_id: client.client_id,
        username: client.username,
    }
}
