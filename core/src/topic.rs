//! Topic names and topic filters (MQTT 5.0 §4.7, §4.8.2): validation, matching with the
//! `+` and `#` wildcards, and `$share/{group}/{filter}` shared subscriptions.
//!
//! Names and filters are borrowed, validated views of a `&str`. Validity depends on the
//! broker's [`TopicLimits`] as well as on the specification, because length and depth
//! bound how much memory and stack a single topic can cost.

use core::fmt;

use crate::codec::ReasonCode;

/// Separates topic levels ([MQTT-4.7.1-1]).
pub const LEVEL_SEPARATOR: char = '/';
/// Prefix of a shared subscription filter (§4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Size limits a broker puts on topic names and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TopicLimits {
    /// Longest name or filter in bytes (the protocol's own ceiling is 65 535).
    pub max_len: usize,
    /// Most levels in a name or filter (a filter's `$share/group/` does not count).
    pub max_depth: usize,
}

impl TopicLimits {
    /// The protocol's own ceiling on length, and 128 levels.
    pub const DEFAULT: Self = Self {
        max_len: u16::MAX as usize,
        max_depth: 128,
    };
}

impl Default for TopicLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TopicError {
    /// Empty names and filters are not allowed ([MQTT-4.7.3-1]).
    Empty,
    /// Longer than [`TopicLimits::max_len`].
    TooLong,
    /// More levels than [`TopicLimits::max_depth`].
    TooDeep,
    /// Contains U+0000 ([MQTT-4.7.3-2]).
    NullCharacter,
    /// A topic name contains `+` or `#` ([MQTT-4.7.0-1]).
    WildcardInName,
    /// `#` that is not a whole, last level ([MQTT-4.7.1-1]), or `+` that is not a whole
    /// level ([MQTT-4.7.1-2]).
    InvalidWildcard,
    /// A `$share/` filter without a valid group name or topic filter ([MQTT-4.8.2-1],
    /// [MQTT-4.8.2-2]).
    InvalidSharedFilter,
}

impl TopicError {
    /// The reason code for a SUBACK/UNSUBACK refusing a filter that fails this way.
    pub const fn filter_reason_code(self) -> ReasonCode {
        ReasonCode::TopicFilterInvalid
    }

    /// The reason code for refusing a PUBLISH whose topic name fails this way.
    pub const fn name_reason_code(self) -> ReasonCode {
        ReasonCode::TopicNameInvalid
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty topic",
            Self::TooLong => "topic longer than the configured limit",
            Self::TooDeep => "topic has more levels than the configured limit",
            Self::NullCharacter => "topic contains U+0000",
            Self::WildcardInName => "topic name contains a wildcard",
            Self::InvalidWildcard => "wildcard does not occupy a whole level",
            Self::InvalidSharedFilter => "invalid $share/{group}/{filter}",
        })
    }
}

impl core::error::Error for TopicError {}

/// Length, null and depth checks shared by names and filters; returns whether the text
/// holds a wildcard character. One pass over the bytes: every PUBLISH's topic goes through
/// here, so four scans for four questions showed in profiles.
fn check_common(topic: &str, limits: &TopicLimits) -> Result<bool, TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > limits.max_len {
        return Err(TopicError::TooLong);
    }
    // `/`, `+`, `#` and U+0000 are ASCII, so bytes answer for characters.
    let mut separators = 0;
    let mut wildcard = false;
    for b in topic.bytes() {
        match b {
            b'/' => separators += 1,
            b'+' | b'#' => wildcard = true,
            0 => return Err(TopicError::NullCharacter),
            _ => {}
        }
    }
    // Levels are separators + 1.
    if separators + 1 > limits.max_depth {
        return Err(TopicError::TooDeep);
    }
    Ok(wildcard)
}

/// A validated topic name: what a PUBLISH is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TopicName<'a>(&'a str);

impl<'a> TopicName<'a> {
    /// Validates `name` against the specification and `limits`.
    pub fn new(name: &'a str, limits: &TopicLimits) -> Result<Self, TopicError> {
        if check_common(name, limits)? {
            return Err(TopicError::WildcardInName);
        }
        Ok(Self(name))
    }

    /// A name that was validated before (a stored message's topic): routing each stored
    /// message checks its topic again for nothing.
    pub(crate) const fn trusted(name: &'a str) -> Self {
        Self(name)
    }

    /// The name as a string.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// The levels of the name, in order.
    pub fn levels(&self) -> core::str::Split<'a, char> {
        self.0.split(LEVEL_SEPARATOR)
    }

    /// Whether this is a `$`-topic (like `$SYS/...`), which wildcards at the first level
    /// never match ([MQTT-4.7.2-1]).
    pub fn is_dollar(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Display for TopicName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A validated topic filter without a `$share/` prefix: what a subscription matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TopicFilter<'a>(&'a str);

impl<'a> TopicFilter<'a> {
    /// Validates `filter` against the specification and `limits`. A `$share/` prefix is
    /// not interpreted here: use [`SubscriptionFilter::parse`] for filters from SUBSCRIBE.
    pub fn new(filter: &'a str, limits: &TopicLimits) -> Result<Self, TopicError> {
        if !check_common(filter, limits)? {
            return Ok(Self(filter));
        }
        let mut levels = filter.split(LEVEL_SEPARATOR).peekable();
        while let Some(level) = levels.next() {
            let has_hash = level.contains('#');
            let has_plus = level.contains('+');
            if has_hash && (level.len() != 1 || levels.peek().is_some()) {
                // [MQTT-4.7.1-1]: `#` alone, as the last level.
                return Err(TopicError::InvalidWildcard);
            }
            if has_plus && level.len() != 1 {
                // [MQTT-4.7.1-2]: `+` occupies a whole level.
                return Err(TopicError::InvalidWildcard);
            }
        }
        Ok(Self(filter))
    }

    /// The filter as a string.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// The levels of the filter, in order.
    pub fn levels(&self) -> core::str::Split<'a, char> {
        self.0.split(LEVEL_SEPARATOR)
    }

    /// Whether the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// Whether `topic` matches this filter (§4.7).
    pub fn matches(&self, topic: &TopicName<'_>) -> bool {
        matches(self.0, topic.0)
    }
}

impl fmt::Display for TopicFilter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Whether topic name `topic` matches topic filter `filter`; both must be valid.
///
/// `+` matches exactly one level (which may be empty), `#` matches the parent level and
/// any number of levels below it ([MQTT-4.7.1-1] example: `sport/#` matches `sport`), and
/// a filter starting with a wildcard never matches a name starting with `$`
/// ([MQTT-4.7.2-1]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split(LEVEL_SEPARATOR);
    let mut topic_levels = topic.split(LEVEL_SEPARATOR);
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A filter as it appears in SUBSCRIBE or UNSUBSCRIBE: plain, or shared by a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SubscriptionFilter<'a> {
    /// An ordinary subscription.
    Plain(TopicFilter<'a>),
    /// `$share/{group}/{filter}`: each message goes to one member of the group (§4.8.2).
    Shared {
        /// The share name.
        group: &'a str,
        /// The filter the group subscribes to.
        filter: TopicFilter<'a>,
    },
}

impl<'a> SubscriptionFilter<'a> {
    /// Parses and validates a filter from SUBSCRIBE or UNSUBSCRIBE.
    pub fn parse(filter: &'a str, limits: &TopicLimits) -> Result<Self, TopicError> {
        let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
            return TopicFilter::new(filter, limits).map(Self::Plain);
        };
        let Some((group, filter)) = rest.split_once(LEVEL_SEPARATOR) else {
            // `$share/group` with no filter.
            return Err(TopicError::InvalidSharedFilter);
        };
        // [MQTT-4.8.2-1]: a share name of at least one character; [MQTT-4.8.2-2]: no `/`
        // (guaranteed by the split), `+` or `#` in it.
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::InvalidSharedFilter);
        }
        let filter = match TopicFilter::new(filter, limits) {
            Ok(filter) => filter,
            Err(TopicError::Empty) => return Err(TopicError::InvalidSharedFilter),
            Err(other) => return Err(other),
        };
        Ok(Self::Shared { group, filter })
    }

    /// The topic filter messages are matched against.
    pub const fn filter(&self) -> TopicFilter<'a> {
        match *self {
            Self::Plain(filter) | Self::Shared { filter, .. } => filter,
        }
    }

    /// The share group, for a shared subscription.
    pub const fn group(&self) -> Option<&'a str> {
        match *self {
            Self::Plain(_) => None,
            Self::Shared { group, .. } => Some(group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TopicLimits = TopicLimits::DEFAULT;

    fn name(s: &str) -> TopicName<'_> {
        TopicName::new(s, &LIMITS).unwrap()
    }

    fn filter(s: &str) -> TopicFilter<'_> {
        TopicFilter::new(s, &LIMITS).unwrap()
    }

    #[test]
    fn multi_level_wildcard_examples() {
        // §4.7.1.2: "sport/tennis/player1/#" matches these three.
        let f = filter("sport/tennis/player1/#");
        assert!(f.matches(&name("sport/tennis/player1")));
        assert!(f.matches(&name("sport/tennis/player1/ranking")));
        assert!(f.matches(&name("sport/tennis/player1/score/wimbledon")));
        // "sport/#" also matches the singular "sport", since # includes the parent level.
        assert!(filter("sport/#").matches(&name("sport")));
        assert!(filter("#").matches(&name("a/b/c")));
        // [MQTT-4.7.1-1]: "sport/tennis#" and "sport/tennis/#/ranking" are not valid.
        assert_eq!(
            TopicFilter::new("sport/tennis#", &LIMITS),
            Err(TopicError::InvalidWildcard)
        );
        assert_eq!(
            TopicFilter::new("sport/tennis/#/ranking", &LIMITS),
            Err(TopicError::InvalidWildcard)
        );
    }

    #[test]
    fn single_level_wildcard_examples() {
        // §4.7.1.3.
        let f = filter("sport/tennis/+");
        assert!(f.matches(&name("sport/tennis/player1")));
        assert!(f.matches(&name("sport/tennis/player2")));
        assert!(!f.matches(&name("sport/tennis/player1/ranking")));
        assert!(!filter("sport/+").matches(&name("sport")));
        assert!(filter("sport/+").matches(&name("sport/")));
        assert!(filter("+").matches(&name("finance")) && !filter("+").matches(&name("/finance")));
        assert!(filter("+/+").matches(&name("/finance")));
        assert!(filter("/+").matches(&name("/finance")));
        assert!(filter("+/tennis/#").matches(&name("sport/tennis/x")));
        // [MQTT-4.7.1-2]: "sport+" is not valid.
        assert_eq!(
            TopicFilter::new("sport+", &LIMITS),
            Err(TopicError::InvalidWildcard)
        );
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        // [MQTT-4.7.2-1] and the §4.7.2 examples.
        assert!(!filter("#").matches(&name("$SYS/broker/clients")));
        assert!(!filter("+/monitor/Clients").matches(&name("$SYS/monitor/Clients")));
        assert!(filter("$SYS/#").matches(&name("$SYS/monitor/Clients")));
        assert!(filter("$SYS/monitor/+").matches(&name("$SYS/monitor/Clients")));
    }

    #[test]
    fn names_reject_wildcards_nulls_and_empty() {
        assert_eq!(
            TopicName::new("a/+", &LIMITS),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(
            TopicName::new("a/#", &LIMITS),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(TopicName::new("", &LIMITS), Err(TopicError::Empty));
        assert_eq!(
            TopicName::new("a\0", &LIMITS),
            Err(TopicError::NullCharacter)
        );
        // Empty levels are valid and distinct ([MQTT-4.7.3-1] only forbids empty topics).
        assert!(!filter("a/b").matches(&name("a//b")));
        assert!(filter("a//b").matches(&name("a//b")));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = TopicLimits {
            max_len: 8,
            max_depth: 3,
        };
        assert!(TopicName::new("a/b/c", &limits).is_ok());
        assert_eq!(TopicName::new("a/b/c/d", &limits), Err(TopicError::TooDeep));
        assert_eq!(
            TopicName::new("abcdefghi", &limits),
            Err(TopicError::TooLong)
        );
        assert_eq!(
            TopicFilter::new("+/+/+/#", &limits),
            Err(TopicError::TooDeep)
        );
    }

    #[test]
    fn shared_filters() {
        let parsed = SubscriptionFilter::parse("$share/g1/sensors/+/temp", &LIMITS).unwrap();
        assert_eq!(parsed.group(), Some("g1"));
        assert_eq!(parsed.filter().as_str(), "sensors/+/temp");
        assert_eq!(
            SubscriptionFilter::parse("$share/g/#", &LIMITS)
                .unwrap()
                .filter()
                .as_str(),
            "#"
        );
        for bad in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
        ] {
            assert_eq!(
                SubscriptionFilter::parse(bad, &LIMITS),
                Err(TopicError::InvalidSharedFilter),
                "{bad}"
            );
        }
        assert_eq!(
            SubscriptionFilter::parse("$share/g/a#", &LIMITS),
            Err(TopicError::InvalidWildcard)
        );
        // Only the exact prefix makes a shared subscription.
        assert!(matches!(
            SubscriptionFilter::parse("$shared/g/a", &LIMITS),
            Ok(SubscriptionFilter::Plain(_))
        ));
    }
}
