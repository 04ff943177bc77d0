//! SUBSCRIBE and UNSUBSCRIBE (§3.8, §3.10): filter checks, authorization and limits per
//! filter, the router, and retained messages sent on subscription (§3.8.4).

use core::num::NonZeroU32;

use super::transmit::ControlKind;
use super::{Broker, BrokerStorage, ClientInfo, ConnectionId, Hooks};
use crate::blob::BlobStore;
use crate::codec::{QoS, ReasonCode, RetainHandling, Subscribe, Subscription, Unsubscribe};
use crate::router::{Delivery, SessionId};
use crate::time::Instant;
use crate::topic::SubscriptionFilter;

/// The verdict on one filter: its SUBACK code, or a protocol error that closes the
/// connection.
type Verdict = Result<ReasonCode, ReasonCode>;

impl<S: BrokerStorage, H: Hooks> Broker<S, H> {
    pub(super) fn on_subscribe(
        &mut self,
        id: ConnectionId,
        subscribe: &Subscribe<'_>,
        now: Instant,
    ) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        let Some(session) = conn.session.get() else {
            return;
        };
        let v5 = conn.protocol.is_v5();
        let count = subscribe.subscriptions.len();
        let Ok(codes) = self
            .blobs
            .insert(count, |b| b.fill(ReasonCode::UnspecifiedError.value()))
        else {
            return self.close(id, ReasonCode::QuotaExceeded, now);
        };
        // One Subscription Identifier applies to every filter of the packet (§3.8.2.1.2).
        let identifier = subscribe
            .properties
            .subscription_identifiers()
            .next()
            .and_then(NonZeroU32::new);
        for (i, subscription) in subscribe.subscriptions.iter().enumerate() {
            match self.subscribe_one(session, &subscription, identifier, v5, now) {
                Ok(code) => {
                    if let Some(slot) = self.blobs.get_mut(codes).and_then(|b| b.get_mut(i)) {
                        *slot = code.value();
                    }
                }
                Err(reason) => {
                    self.blobs.remove(codes);
                    self.stats.protocol_errors += 1;
                    return self.close(id, reason, now);
                }
            }
        }
        // Queued before any retained message goes out ([MQTT-3.8.4-1]: SUBACK answers).
        self.push_control(id, ControlKind::SubAck(subscribe.packet_id, codes), now);
    }

    fn subscribe_one(
        &mut self,
        session: u32,
        subscription: &Subscription<'_>,
        identifier: Option<NonZeroU32>,
        v5: bool,
        now: Instant,
    ) -> Verdict {
        let failure = |code: ReasonCode| {
            Ok(if v5 {
                code
            } else {
                ReasonCode::UnspecifiedError
            })
        };
        let Ok(filter) = SubscriptionFilter::parse(subscription.filter, &self.config.topic_limits)
        else {
            return failure(ReasonCode::TopicFilterInvalid);
        };
        let options = subscription.options;
        // [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol error.
        if v5 && filter.group().is_some() && options.no_local {
            return Err(ReasonCode::ProtocolError);
        }
        let allowed = {
            let s = self.sessions.get(session);
            let client = ClientInfo {
                client_id: s.map_or("", |s| s.client_id()),
                username: s.and_then(|s| s.username()),
            };
            self.hooks
                .authorize_subscribe(&client, subscription.filter, options.qos)
        };
        if !allowed {
            return failure(ReasonCode::NotAuthorized);
        }
        let existed = self.router.contains(SessionId(session), &filter);
        let count = self.sessions.get(session).map_or(0, |s| s.subscriptions);
        if !existed && count as usize >= self.config.max_subscriptions_per_client {
            return failure(ReasonCode::QuotaExceeded);
        }
        let mut granted = options;
        granted.qos = options.qos.min(self.config.max_qos);
        if self
            .router
            .subscribe(SessionId(session), &filter, granted, identifier)
            .is_err()
        {
            return failure(ReasonCode::QuotaExceeded);
        }
        if !existed && let Some(s) = self.sessions.get_mut(session) {
            s.subscriptions += 1;
        }
        #[cfg(feature = "alloc")]
        if !existed {
            self.note_interest(session, subscription.filter, true);
        }
        self.mark_subscription(session, subscription.filter);
        // §3.8.4: retained messages per Retain Handling; never to shared subscriptions
        // (§4.8.2).
        let send_retained = filter.group().is_none()
            && match options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            let mut identifiers = heapless::Vec::new();
            if let Some(id) = identifier {
                let _ = identifiers.push(id);
            }
            let delivery = Delivery {
                session: SessionId(session),
                qos: granted.qos,
                retain_as_published: true,
                identifiers,
                shared: false,
            };
            let filter = filter.filter();
            self.purge_expired_retained(now);
            for slot in 0..self.retained.handle_bound() {
                let Some(&message) = self.retained.get(slot) else {
                    continue;
                };
                let matches = self
                    .messages
                    .get(message)
                    .and_then(|m| m.parts(&self.blobs))
                    .is_some_and(|p| crate::topic::matches(filter.as_str(), p.topic));
                if matches {
                    // [MQTT-3.3.1-9]: RETAIN is set on messages sent because of a subscription.
                    self.enqueue(message, &delivery, true, now);
                }
            }
        }
        Ok(match granted.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        })
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        id: ConnectionId,
        unsubscribe: &Unsubscribe<'_>,
        now: Instant,
    ) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        let Some(session) = conn.session.get() else {
            return;
        };
        let count = unsubscribe.filters.len();
        let Ok(codes) = self
            .blobs
            .insert(count, |b| b.fill(ReasonCode::Success.value()))
        else {
            return self.close(id, ReasonCode::QuotaExceeded, now);
        };
        for (i, filter) in unsubscribe.filters.iter().enumerate() {
            let code = match SubscriptionFilter::parse(filter, &self.config.topic_limits) {
                Err(_) => ReasonCode::TopicFilterInvalid,
                Ok(parsed) if self.router.unsubscribe(SessionId(session), &parsed) => {
                    if let Some(s) = self.sessions.get_mut(session) {
                        s.subscriptions -= 1;
                    }
                    self.mark_subscription(session, filter);
                    #[cfg(feature = "alloc")]
                    self.note_interest(session, filter, false);
                    ReasonCode::Success
                }
                // 5.0 §3.11.3: nothing to remove is still answered, with 0x11.
                Ok(_) => ReasonCode::NoSubscriptionExisted,
            };
            if let Some(slot) = self.blobs.get_mut(codes).and_then(|b| b.get_mut(i)) {
                *slot = code.value();
            }
        }
        self.push_control(id, ControlKind::UnsubAck(unsubscribe.packet_id, codes), now);
    }
}
