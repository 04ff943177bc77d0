//! The core's [`Hooks`], answered from [`Auth`]: the admission's verdict for CONNECT, the
//! ACL for PUBLISH and SUBSCRIBE. Runs on the broker task, so nothing here hashes
//! (except the logged fallback when a verdict is missing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fulmar_core::broker::{ClientInfo, ConnectRequest, ConnectionId, Hooks};
use fulmar_core::codec::{QoS, ReasonCode};
use tracing::{info, warn};

use super::acl::Client;
use super::{Auth, Credentials, Files};

/// The edge broker's hooks.
#[derive(Debug)]
pub struct EdgeHooks {
    auth: Arc<Auth>,
    /// The rules as of the last check ([`Auth::refresh`]).
    files: Arc<Files>,
    /// The shard whose core these hooks serve (verdicts are kept per shard).
    shard: usize,
    /// The session user name of the connection accepted last, for
    /// [`Hooks::session_username`], which the core asks right after accepting.
    accepted: Option<(ConnectionId, Option<String>)>,
    /// `limits.max_sessions`, shared with the other shards' hooks.
    sessions: Arc<SessionBudget>,
}

impl EdgeHooks {
    /// Hooks that decide with `auth`, for a broker that counts its sessions alone.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self::for_shard(auth, 0, Arc::new(SessionBudget::new(usize::MAX)))
    }

    /// Hooks for the core of shard `shard`; `sessions` is the limit all shards share.
    pub fn for_shard(auth: Arc<Auth>, shard: usize, sessions: Arc<SessionBudget>) -> Self {
        Self {
            files: auth.files(),
            auth,
            shard,
            accepted: None,
            sessions,
        }
    }
}

/// The client sessions all shards hold together, against `limits.max_sessions`: each
/// core counts only its own, so without this N shards would keep N times the limit
/// (and the memory it bounds).
#[derive(Debug)]
pub struct SessionBudget {
    used: AtomicUsize,
    max: usize,
}

impl SessionBudget {
    /// A budget of `max` sessions.
    pub fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a place for a new session, if one is left.
    fn claim(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a place back.
    fn release(&self) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Sessions held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
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
        self.auth
            .refresh(&mut self.files)
            .may_publish(acl_client(client), topic)
    }

    fn authorize_subscribe(&mut self, client: &ClientInfo<'_>, filter: &str, _qos: QoS) -> bool {
        // A shared subscription reads what its filter matches: `$share/{group}/{filter}`.
        let filter = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_, filter)| filter);
        self.auth
            .refresh(&mut self.files)
            .may_subscribe(acl_client(client), filter)
    }

    fn claim_session(&mut self) -> bool {
        self.sessions.claim()
    }

    fn session_ended(&mut self) {
        self.sessions.release();
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
