//! Messages the broker holds: one stored copy per PUBLISH, shared by the retained store,
//! every session queue it is waiting in, and wills. Topic, kept properties and payload sit
//! together in one blob.

use crate::blob::{BlobId, BlobStore};
use crate::codec::QoS;
use crate::time::Instant;

/// A stored application message.
#[derive(Debug)]
pub struct Message {
    pub(crate) blob: BlobId,
    pub(crate) topic_len: u16,
    pub(crate) properties_len: u32,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// When the Message Expiry Interval runs out (5.0 §3.3.2.3.3).
    pub(crate) expires_at: Option<Instant>,
    /// Queue entries, the retained store and wills that hold this message.
    pub(crate) refs: u32,
}

/// The parts of a stored message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageParts<'b> {
    pub(crate) topic: &'b str,
    /// 5.0 properties in wire form, without Message Expiry Interval, Topic Alias and
    /// Subscription Identifier, which are set per delivery.
    pub(crate) properties: &'b [u8],
    pub(crate) payload: &'b [u8],
}

impl Message {
    pub(crate) fn parts<'b>(&self, blobs: &'b impl BlobStore) -> Option<MessageParts<'b>> {
        let bytes = blobs.get(self.blob)?;
        let topic_len = usize::from(self.topic_len);
        let props_end = topic_len + self.properties_len as usize;
        let topic = core::str::from_utf8(bytes.get(..topic_len)?).ok()?;
        Some(MessageParts {
            topic,
            properties: bytes.get(topic_len..props_end)?,
            payload: bytes.get(props_end..)?,
        })
    }

    /// Payload size, for queue and retained byte limits.
    pub(crate) fn payload_len(&self, blobs: &impl BlobStore) -> usize {
        // Not through `parts`: the length needs no UTF-8 check of the topic, and queue
        // accounting asks for it once per delivery.
        let header = usize::from(self.topic_len) + self.properties_len as usize;
        blobs
            .get(self.blob)
            .map_or(0, |bytes| bytes.len().saturating_sub(header))
    }
}
