//! Access control lists in Mosquitto's `acl_file` syntax.
//!
//! ```text
//! # Anonymous clients (no user name): the topic lines before the first `user` line.
//! topic read public/#
//!
//! user alice
//! topic readwrite sensors/#
//! topic deny sensors/secret
//! topic read $SYS/#
//!
//! # Every client, wherever the line stands: %c is its client identifier, %u its user name.
//! pattern readwrite clients/%c/#
//! pattern read users/%u/inbox/#
//! ```
//!
//! - `topic [read|write|readwrite|deny] FILTER` (access defaults to `readwrite`) applies to
//!   the user of the `user NAME` line above it, or to anonymous clients before any.
//! - `pattern [ACCESS] FILTER` applies to every client, with `%c` and `%u` replaced. A
//!   pattern with `%u` does not apply to a client without a user name, and none applies
//!   when the value put in contains `/`, `+` or `#`, which would let a client name reach
//!   other clients' topics (Mosquitto refuses `+` and `#` since CVE-2017-7650; `/` is
//!   refused here too, so user `a/b` cannot reach user `a`'s `users/a/b`).
//! - Filters are MQTT topic filters: `+` and `#` are wildcards, and a wildcard in the first
//!   level does not match `$` topics, so `#` does not grant `$SYS`: `$SYS/#` must be named.
//! - Lines starting with `#` and blank lines are ignored; anything else is an error
//!   reported with its line number.
//!
//! The decisions (when an ACL file is set, everything not granted is refused):
//! - Publishing to a topic needs a `write` or `readwrite` rule matching it and no `deny`
//!   rule matching it.
//! - Subscribing to a filter needs a `read` or `readwrite` rule whose filter covers it
//!   (matches every topic the subscription could match: `sensors/#` covers `sensors/+/t`,
//!   `sensors/t` does not cover `sensors/+`), and no `deny` rule that could match any topic
//!   the subscription matches. Mosquitto instead grants every subscription and checks each
//!   message as it is delivered; Fulmar decides once, when it can still say no in the
//!   SUBACK, so a message is never delivered that the client may not read (retained ones
//!   included) and routing costs nothing more. The price: a filter wider than what the
//!   client may read (`#` for a client that may read `sensors/#`) is refused as a whole
//!   rather than trimmed.
//! - A `deny` rule wins over any grant.

use std::borrow::Cow;
use std::collections::HashMap;

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe (and receive).
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever other rules say.
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "readwrite" => Some(Self::ReadWrite),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }

    fn reads(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// `topic` lines before the first `user` line.
    anonymous: Vec<Rule>,
    /// `topic` lines after `user NAME`, per name (repeated `user` sections add up).
    users: HashMap<String, Vec<Rule>>,
    /// `pattern` lines.
    patterns: Vec<Rule>,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The client identifier (`%c`).
    pub client_id: &'a str,
    /// The user name its session runs under (`%u`), if any.
    pub username: Option<&'a str>,
}

impl Acl {
    /// Parses an ACL file's text.
    ///
    /// # Errors
    /// The first bad line: its number (from 1) and what is wrong.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut acl = Self::default();
        let mut user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err((number, "`user` needs a user name".to_owned()));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(keyword, rest).map_err(|e| (number, e))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some(name) = &user {
                        acl.users.entry(name.clone()).or_default().push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                other => {
                    return Err((
                        number,
                        format!("unknown keyword {other:?} (expected user, topic or pattern)"),
                    ));
                }
            }
        }
        Ok(acl)
    }

    /// Whether `client` may publish to `topic` (a topic name, no wildcards).
    pub fn may_publish(&self, client: Client<'_>, topic: &str) -> bool {
        self.decide(client, |rule, filter| {
            if rule.access == Access::Deny {
                Verdict::deny_if(matches(filter, topic))
            } else {
                Verdict::grant_if(rule.access.writes() && matches(filter, topic))
            }
        })
    }

    /// Whether `client` may subscribe to `filter` (without any `$share/{group}/` prefix).
    pub fn may_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        self.decide(client, |rule, rule_filter| {
            if rule.access == Access::Deny {
                Verdict::deny_if(overlaps(rule_filter, filter))
            } else {
                Verdict::grant_if(rule.access.reads() && covers(rule_filter, filter))
            }
        })
    }

    /// Goes through every rule that applies to `client` (its `topic` rules, or the
    /// anonymous ones, then the patterns): refused if any rule denies, else granted if any
    /// rule grants, else refused.
    fn decide(&self, client: Client<'_>, judge: impl Fn(&Rule, &str) -> Verdict) -> bool {
        let own = match client.username {
            Some(name) => self.users.get(name).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous,
        };
        let mut granted = false;
        let topics = own
            .iter()
            .map(|rule| (rule, Some(Cow::Borrowed(&*rule.filter))));
        let patterns = self
            .patterns
            .iter()
            .map(|rule| (rule, substitute(&rule.filter, client)));
        for (rule, filter) in topics.chain(patterns) {
            let Some(filter) = filter else { continue };
            match judge(rule, &filter) {
                Verdict::Deny => return false,
                Verdict::Grant => granted = true,
                Verdict::Silent => {}
            }
        }
        granted
    }
}

/// What one rule says about one request.
enum Verdict {
    Grant,
    Deny,
    Silent,
}

impl Verdict {
    fn grant_if(condition: bool) -> Self {
        if condition { Self::Grant } else { Self::Silent }
    }

    fn deny_if(condition: bool) -> Self {
        if condition { Self::Deny } else { Self::Silent }
    }
}

/// Reads the rest of a `topic` / `pattern` line: an optional access word, then the filter
/// (the rest of the line: it may contain spaces).
fn parse_rule(keyword: &str, rest: &str) -> Result<Rule, String> {
    let (first, after) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(f, a)| (f, a.trim()));
    let (access, filter) = match Access::parse(first) {
        Some(access) => (access, after),
        None => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err(format!("`{keyword}` needs a topic filter"));
    }
    check_filter(filter)?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

/// The rules MQTT makes for topic filters ([MQTT-4.7.1-2], [MQTT-4.7.1-3]).
fn check_filter(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "bad topic filter {filter:?}: `#` must be a whole level, and the last"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "bad topic filter {filter:?}: `+` must be a whole level"
            ));
        }
    }
    Ok(())
}

/// A pattern's filter for `client`, or `None` when the pattern does not apply to it.
fn substitute<'r>(pattern: &'r str, client: Client<'_>) -> Option<Cow<'r, str>> {
    if !pattern.contains('%') {
        return Some(Cow::Borrowed(pattern));
    }
    let safe = |value: &str| !value.contains(['/', '+', '#']);
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            Some('c') => {
                if !safe(client.client_id) {
                    return None;
                }
                out.push_str(client.client_id);
                rest = &after[1..];
            }
            Some('u') => {
                let name = client.username.filter(|u| safe(u))?;
                out.push_str(name);
                rest = &after[1..];
            }
            // Not a placeholder: a literal `%`.
            _ => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// Whether a wildcard in the first level of one side meets a `$` topic on the other,
/// which it never matches ([MQTT-4.7.2-1]).
fn dollar_mismatch(wild: &str, literal: &str) -> bool {
    let first_wild = matches!(wild.split('/').next(), Some("+" | "#"));
    first_wild && literal.starts_with('$')
}

/// Whether filter `filter` matches topic name `topic` (§4.7).
pub fn matches(filter: &str, topic: &str) -> bool {
    if dollar_mismatch(filter, topic) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // `#` also matches the parent level: `a/#` matches `a`.
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether every topic that `filter` matches is also matched by `rule`.
pub fn covers(rule: &str, filter: &str) -> bool {
    // `#` and `+/…` never match `$` topics; a filter whose first level is a `$` name does.
    if dollar_mismatch(rule, filter) {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && b != "+" && b != "#" => {}
            _ => return false,
        }
    }
}

/// Whether some topic is matched by both `rule` and `filter`.
pub fn overlaps(rule: &str, filter: &str) -> bool {
    if dollar_mismatch(rule, filter) || dollar_mismatch(filter, rule) {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(a), Some(b)) if a == "+" || b == "+" || a == b => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACL: &str = "\
# anonymous
topic read public/#

user alice
topic readwrite sensors/#
topic deny sensors/secret
topic read $SYS/#
topic write cmd with spaces/+

user bob
topic sensors/bob

pattern readwrite clients/%c/#
pattern read users/%u/inbox/#
";

    fn client<'a>(client_id: &'a str, username: Option<&'a str>) -> Client<'a> {
        Client {
            client_id,
            username,
        }
    }

    #[test]
    fn filter_matching() {
        assert!(matches("a/b", "a/b"));
        assert!(matches("a/+", "a/b"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
    }

    #[test]
    fn filter_coverage() {
        assert!(covers("a/#", "a/#"));
        assert!(covers("a/#", "a/+/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("#", "#"));
        assert!(covers("#", "a/+/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+/#", "a/#"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
        assert!(!covers("$SYS/#", "+/broker"));
    }

    #[test]
    fn filter_overlap() {
        assert!(overlaps("a/b", "a/+"));
        assert!(overlaps("a/b", "#"));
        assert!(overlaps("a/+/c", "a/b/+"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("a/b", "a/b/c"));
        assert!(!overlaps("$SYS/x", "#"));
        assert!(!overlaps("#", "$SYS/#"));
        assert!(overlaps("$SYS/#", "$SYS/+"));
    }

    #[test]
    fn anonymous_rules_come_before_the_first_user() {
        let acl = Acl::parse(ACL).unwrap();
        let anon = client("c", None);
        assert!(acl.may_subscribe(anon, "public/#"));
        assert!(acl.may_subscribe(anon, "public/news"));
        assert!(!acl.may_publish(anon, "public/news"));
        assert!(!acl.may_subscribe(anon, "sensors/#"));
        // Named users do not get the anonymous rules.
        assert!(!acl.may_subscribe(client("c", Some("alice")), "public/news"));
        // A user without a section gets only the patterns.
        let carol = client("carol-1", Some("carol"));
        assert!(!acl.may_subscribe(carol, "public/news"));
        assert!(acl.may_publish(carol, "clients/carol-1/x"));
    }

    #[test]
    fn user_rules_with_deny() {
        let acl = Acl::parse(ACL).unwrap();
        let alice = client("a1", Some("alice"));
        assert!(acl.may_publish(alice, "sensors/t1"));
        assert!(acl.may_subscribe(alice, "sensors/t1"));
        assert!(acl.may_subscribe(alice, "sensors/+/x"));
        assert!(acl.may_subscribe(alice, "sensors/t1/#"));
        assert!(!acl.may_publish(alice, "sensors/secret"));
        assert!(!acl.may_subscribe(alice, "sensors/secret"));
        // Could match sensors/secret: refused as a whole.
        assert!(!acl.may_subscribe(alice, "sensors/+"));
        assert!(!acl.may_subscribe(alice, "sensors/#"));
        assert!(!acl.may_subscribe(alice, "#"));
        assert!(acl.may_publish(alice, "cmd with spaces/x"));
        assert!(!acl.may_subscribe(alice, "cmd with spaces/x"));
        // Default access is readwrite.
        let bob = client("b1", Some("bob"));
        assert!(acl.may_publish(bob, "sensors/bob"));
        assert!(acl.may_subscribe(bob, "sensors/bob"));
        assert!(!acl.may_subscribe(bob, "sensors/+"));
    }

    #[test]
    fn sys_is_readable_only_where_granted() {
        let acl = Acl::parse(ACL).unwrap();
        assert!(acl.may_subscribe(client("a", Some("alice")), "$SYS/#"));
        assert!(acl.may_subscribe(client("a", Some("alice")), "$SYS/broker/uptime"));
        assert!(!acl.may_subscribe(client("b", Some("bob")), "$SYS/#"));
        let everything = Acl::parse("topic readwrite #\n").unwrap();
        let anon = client("c", None);
        assert!(everything.may_subscribe(anon, "#"));
        assert!(!everything.may_subscribe(anon, "$SYS/#"));
        assert!(!everything.may_subscribe(anon, "$SYS/broker/uptime"));
        assert!(!everything.may_publish(anon, "$SYS/broker/uptime"));
    }

    #[test]
    fn patterns_substitute_client_and_user() {
        let acl = Acl::parse(ACL).unwrap();
        let alice = client("dev-1", Some("alice"));
        assert!(acl.may_subscribe(alice, "clients/dev-1/#"));
        assert!(acl.may_publish(alice, "clients/dev-1/status"));
        assert!(!acl.may_publish(alice, "clients/dev-2/status"));
        assert!(!acl.may_subscribe(alice, "clients/+/status"));
        assert!(acl.may_subscribe(alice, "users/alice/inbox/#"));
        assert!(!acl.may_publish(alice, "users/alice/inbox/x"));
        assert!(!acl.may_subscribe(alice, "users/bob/inbox/#"));
        // %u needs a user name.
        assert!(!acl.may_subscribe(client("x", None), "users//inbox/#"));
        // Names that would widen the pattern are not substituted.
        assert!(!acl.may_subscribe(client("#", Some("alice")), "clients/#"));
        assert!(!acl.may_subscribe(client("+", Some("alice")), "clients/+/x"));
        assert!(!acl.may_subscribe(client("c", Some("a/b")), "users/a/b/inbox/x"));
        // A % that is no placeholder stays.
        let odd = Acl::parse("pattern read 100%/%c\n").unwrap();
        assert!(odd.may_subscribe(client("k", None), "100%/k"));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases = [
            ("topic read\n", 1, "needs a topic filter"),
            ("\n\nuser\n", 3, "needs a user name"),
            ("user a\ntopic a/#/b\n", 2, "`#` must be a whole level"),
            ("pattern read a+/b\n", 1, "`+` must be a whole level"),
            ("# ok\ntopics read a\n", 2, "unknown keyword \"topics\""),
        ];
        for (text, line, message) in cases {
            let (got_line, got) = Acl::parse(text).unwrap_err();
            assert_eq!(got_line, line, "{text:?}: {got}");
            assert!(got.contains(message), "{text:?}: {got}");
        }
    }

    #[test]
    fn repeated_user_sections_add_up() {
        let acl = Acl::parse("user a\ntopic x\nuser b\ntopic y\nuser a\ntopic z\n").unwrap();
        let a = client("c", Some("a"));
        assert!(acl.may_publish(a, "x"));
        assert!(acl.may_publish(a, "z"));
        assert!(!acl.may_publish(a, "y"));
    }
}
