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
    /// The shard whose core these hooks serve (verdicts are kept per shard).
    shard: usize,
    /// The session user name of the connection accepted last, for
    /// [`Hooks::session_username`], which the core asks right after accepting.
    accepted: Option<(ConnectionId, Option<String>)>,
}

impl EdgeHooks {
    /// Hooks that decide with `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self::for_shard(auth, 0)
    }

    /// Hooks for the core of shard `shard`.
    pub fn for_shard(auth: Arc<Auth>, shard: usize) -> Self {
        Self {
            auth,
            shard,
            accepted: None,
        }
    }
}

impl Hooks for EdgeHooks {
    fn authenticate(&mut self, request: &ConnectRequest<'_>) -> ReasonCode {
        let decision = match self
            .auth
            .claim((self.shard, request.connection), request.username)
        {
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
        self.auth.may_publish(acl_client(client), topic)
    }

    fn authorize_subscribe(&mut self, client: &ClientInfo<'_>, filter: &str, _qos: QoS) -> bool {
        // A shared subscription reads what its filter matches: `$share/{group}/{filter}`.
        let filter = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_, filter)| filter);
        self.auth.may_subscribe(acl_client(client), filter)
    }
}

fn acl_client<'a>(client: &ClientInfo<'a>) -> Client<'a> {
    Client {
        client_id: client.client_id,
        username: client.username,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl::Acl;
    use crate::auth::{Auth, Settings};

    fn client<'a>(username: Option<&'a str>) -> ClientInfo<'a> {
        ClientInfo {
            client_id: "c1",
            username,
        }
    }

    #[test]
    fn nobody_publishes_to_sys_even_without_an_acl() {
        let mut hooks = EdgeHooks::new(Arc::new(Auth::open()));
        let anyone = client(None);
        assert!(hooks.authorize_publish(&anyone, "a/b", QoS::AtMostOnce, false));
        assert!(hooks.authorize_publish(&anyone, "$SYSTEM/x", QoS::AtMostOnce, false));
        assert!(!hooks.authorize_publish(&anyone, "$SYS/broker/uptime", QoS::AtMostOnce, false));
        assert!(!hooks.authorize_publish(&anyone, "$SYS", QoS::AtMostOnce, false));
        assert!(hooks.authorize_subscribe(&anyone, "$SYS/#", QoS::AtMostOnce));
    }

    #[test]
    fn a_shared_subscription_is_judged_by_its_filter() {
        let acl = Acl::parse("user u\ntopic read s/#\n").unwrap();
        let auth = Auth::with(&Settings::default(), None, Some(acl), 1024);
        let mut hooks = EdgeHooks::new(Arc::new(auth));
        let u = client(Some("u"));
        assert!(hooks.authorize_subscribe(&u, "$share/g/s/+", QoS::AtMostOnce));
        assert!(hooks.authorize_subscribe(&u, "s/x", QoS::AtMostOnce));
        assert!(!hooks.authorize_subscribe(&u, "$share/s/other", QoS::AtMostOnce));
        assert!(!hooks.authorize_subscribe(&client(None), "s/x", QoS::AtMostOnce));
    }
}
