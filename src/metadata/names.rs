//! The rules for the names the metadata holds: topic names as Kafka allows them, and the
//! `host:port` addresses of brokers.

use super::MetaError;

/// Longest topic name: Kafka's limit, so that every Kafka client accepts every keel name.
pub const TOPIC_NAME_CHARS_MAX: usize = 249;
/// Longest broker address (`host:port`): a DNS name is at most 253 characters.
pub const ADDRESS_BYTES_MAX: usize = 261;
/// The prefix that marks an internal topic such as `__consumer_offsets`.
pub const INTERNAL_PREFIX: &str = "__";
/// The internal topic that holds consumer groups' committed offsets (issue 15).
pub const CONSUMER_OFFSETS: &str = "__consumer_offsets";

/// Checks a topic name against Kafka's rules and keel's reservation of `__` names for
/// internal topics: an internal topic must use the prefix and any other must not.
pub fn check_topic_name(name: &str, internal: bool) -> Result<(), MetaError> {
    let refuse = |rule| Err(MetaError::InvalidTopicName { name: shorten(name), rule });
    if name.is_empty() || name.len() > TOPIC_NAME_CHARS_MAX {
        return refuse("a topic name has 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return refuse("`.` and `..` are not topic names");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return refuse("a topic name uses only ASCII letters, digits, `.`, `_` and `-`");
    }
    match (name.starts_with(INTERNAL_PREFIX), internal) {
        (true, false) => refuse("names starting with `__` are reserved for internal topics"),
        (false, true) => refuse("an internal topic's name starts with `__`"),
        _ => Ok(()),
    }
}

/// Checks a `host:port` address: a host, then a port from 1 to 65535. The host is not
/// resolved here (resolution is I/O, and a name may resolve differently on each node).
pub fn check_address(address: &str) -> Result<(), MetaError> {
    let refuse = |rule| Err(MetaError::InvalidAddress { address: shorten(address), rule });
    if address.len() > ADDRESS_BYTES_MAX {
        return refuse("an address has at most 261 bytes");
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return refuse("an address is HOST:PORT");
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("an address names a host, without spaces");
    }
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(port) if digits && port > 0 => Ok(()),
        _ => refuse("an address ends with a port from 1 to 65535"),
    }
}

/// A name short enough to quote in an error message: a forged command may carry a name of
/// any length, and an error should not repeat megabytes of it.
fn shorten(text: &str) -> String {
    const QUOTED_CHARS_MAX: usize = 300;
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(name: &str, internal: bool) -> &'static str {
        match check_topic_name(name, internal) {
            Err(MetaError::InvalidTopicName { rule, .. }) => rule,
            other => panic!("{name:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn names_kafka_allows_are_accepted() {
        for name in ["orders", "a", "A-b_c.9", "..x", ".hidden", &"x".repeat(TOPIC_NAME_CHARS_MAX)] {
            assert_eq!(check_topic_name(name, false), Ok(()), "{name:?}");
        }
        assert_eq!(check_topic_name(CONSUMER_OFFSETS, true), Ok(()));
    }

    #[test]
    fn empty_and_overlong_names_are_refused() {
        assert!(rule_of("", false).contains("1 to 249"));
        assert!(rule_of(&"x".repeat(TOPIC_NAME_CHARS_MAX + 1), false).contains("1 to 249"));
    }

    #[test]
    fn dot_and_dot_dot_are_refused() {
        assert!(rule_of(".", false).contains("`.` and `..`"));
        assert!(rule_of("..", false).contains("`.` and `..`"));
    }

    #[test]
    fn characters_outside_kafkas_set_are_refused() {
        for name in ["a b", "a/b", "é", "a:b", "a\0", "a*"] {
            assert!(rule_of(name, false).contains("ASCII letters"), "{name:?}");
        }
    }

    #[test]
    fn double_underscore_names_are_reserved_for_internal_topics() {
        assert!(rule_of("__mine", false).contains("reserved for internal topics"));
        assert!(rule_of("mine", true).contains("starts with `__`"));
    }

    #[test]
    fn an_error_quotes_a_long_name_shortened() {
        let error = check_topic_name(&"é".repeat(100_000), false).unwrap_err().to_string();
        assert!(error.len() < 1000, "{} bytes", error.len());
    }

    #[test]
    fn addresses_are_host_and_port() {
        for address in ["127.0.0.1:7000", "node-1.keel.svc:7000", "[::1]:9092", "h:1", "h:65535"] {
            assert_eq!(check_address(address), Ok(()), "{address:?}");
        }
        for address in ["", "host", ":7000", "host:", "host:0", "host:65536", "host:+80", "a b:1", "h:7x"] {
            assert!(matches!(check_address(address), Err(MetaError::InvalidAddress { .. })), "{address:?}");
        }
        let long = format!("{}:1", "h".repeat(ADDRESS_BYTES_MAX));
        assert!(matches!(check_address(&long), Err(MetaError::InvalidAddress { .. })));
    }
}
