//! How one member of a shared subscription group is chosen for each message (MQTT 5.0
//! §4.8.2: every message matching a shared subscription goes to exactly one member).

/// The choice of member in a `$share` group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ShareStrategy {
    /// Members take turns (the default, as in Mosquitto and EMQX).
    #[default]
    RoundRobin,
    /// A member drawn at random (from the router's seeded generator).
    Random,
    /// The same publisher always reaches the same member while the group is unchanged,
    /// which keeps one publisher's messages in order.
    HashPublisher,
    /// The same topic always reaches the same member while the group is unchanged.
    HashTopic,
}

/// xorshift64*: a small, fast generator for [`ShareStrategy::Random`]; not for secrets.
#[inline]
pub(crate) fn next_random(state: u64) -> (u64, u64) {
    let mut x = if state == 0 {
        0x9E37_79B9_7F4A_7C15
    } else {
        state
    };
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    (x, x.wrapping_mul(0x2545_F491_4F6C_DD1D))
}
