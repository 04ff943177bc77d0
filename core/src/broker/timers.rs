//! Time: CONNECT timeout, keep alive ([MQTT-3.1.2-22]: 1.5 times the interval), will
//! delays and session expiry. [`Broker::poll_timeout`] gives the earliest deadline;
//! [`Broker::handle_timeout`] acts on every deadline that has passed.

use super::connection::Phase;
use super::{Broker, BrokerStorage, ConnectionId, Hooks};
use crate::codec::ReasonCode;
use crate::time::{Duration, Instant};

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    /// When [`Broker::handle_timeout`] should next be called, if anything is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        };
        for (_, conn) in self.connections.iter() {
            consider(self.connection_deadline(conn));
        }
        for (_, session) in self.sessions.iter() {
            consider(session.will.and_then(|w| w.due.get()));
            consider(session.expires_at());
        }
        earliest
    }

    fn connection_deadline(&self, conn: &super::Connection) -> Option<Instant> {
        match conn.phase {
            Phase::AwaitingConnect => Some(conn.opened_at + self.config.connect_timeout),
            // [MQTT-3.1.2-22]: one and a half times the keep alive without a packet.
            Phase::Connected if conn.keep_alive > 0 => {
                Some(conn.last_received + Duration::from_millis(u64::from(conn.keep_alive) * 1500))
            }
            _ => None,
        }
    }

    /// Acts on every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in 0..self.connections.handle_bound() {
            let Some(conn) = self.connections.get(slot) else {
                continue;
            };
            let id = ConnectionId {
                slot,
                generation: conn.generation,
            };
            let phase = conn.phase;
            if self.connection_deadline(conn).is_some_and(|d| d <= now) {
                match phase {
                    Phase::AwaitingConnect => {
                        self.close_silently(id, ReasonCode::MaximumConnectTime, now)
                    }
                    _ => self.close(id, ReasonCode::KeepAliveTimeout, now),
                }
            }
        }
        for handle in 0..self.sessions.handle_bound() {
            let Some(session) = self.sessions.get(handle) else {
                continue;
            };
            if session
                .will
                .and_then(|w| w.due.get())
                .is_some_and(|d| d <= now)
            {
                self.publish_will(handle, now);
            }
            if self
                .sessions
                .get(handle)
                .and_then(|s| s.expires_at())
                .is_some_and(|at| at <= now)
            {
                self.end_session(handle, now);
            }
        }
    }
}
