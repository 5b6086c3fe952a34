//! A topic's configuration (the keys Kafka users know, each optional, falling back to a
//! cluster-wide default) and the cluster's settings.

use std::fmt;

use super::MetaError;
use crate::producers::{self, ProducerConfig};

/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// The highest value `cluster_partitions_max` may be set to.
pub const CLUSTER_PARTITIONS_LIMIT: u32 = 1_000_000;
/// Largest record a topic may allow (`max.message.bytes`).
pub const MESSAGE_BYTES_MAX: u32 = 64 << 20;
/// Smallest `segment.bytes`: smaller segments would roll after every few batches.
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
/// Room a segment needs besides one record: the segment header, the entry header and the
/// batch header, with margin. A segment must hold a whole record, so `segment.bytes` is at
/// least `max.message.bytes` plus this.
pub const SEGMENT_ROOM_BYTES: u64 = 64 << 10;

/// The topic configuration keys keel knows, by their Kafka names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKey {
    RetentionBytes,
    RetentionMs,
    MaxMessageBytes,
    SegmentBytes,
    CleanupPolicy,
}

impl ConfigKey {
    pub const ALL: [ConfigKey; 5] = [
        ConfigKey::RetentionBytes,
        ConfigKey::RetentionMs,
        ConfigKey::MaxMessageBytes,
        ConfigKey::SegmentBytes,
        ConfigKey::CleanupPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConfigKey::RetentionBytes => "retention.bytes",
            ConfigKey::RetentionMs => "retention.ms",
            ConfigKey::MaxMessageBytes => "max.message.bytes",
            ConfigKey::SegmentBytes => "segment.bytes",
            ConfigKey::CleanupPolicy => "cleanup.policy",
        }
    }

    /// The key named `name`; an unknown name is refused by name, so a typo is not ignored.
    pub fn parse(name: &str) -> Result<ConfigKey, MetaError> {
        ConfigKey::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| MetaError::UnknownConfigKey { key: name.chars().take(100).collect() })
    }

    /// The key's number in the metadata encoding (`codec.rs`).
    pub(crate) fn code(self) -> u8 {
        match self {
            ConfigKey::RetentionBytes => 1,
            ConfigKey::RetentionMs => 2,
            ConfigKey::MaxMessageBytes => 3,
            ConfigKey::SegmentBytes => 4,
            ConfigKey::CleanupPolicy => 5,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<ConfigKey> {
        ConfigKey::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to old records of a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Whole old segments are deleted by retention.
    #[default]
    Delete,
    /// Only the last record of each key is kept; reserved for internal topics such as
    /// `__consumer_offsets` (issue 15), whose records are keyed by design.
    Compact,
}

impl CleanupPolicy {
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }

    pub(crate) fn code(self) -> u64 {
        match self {
            CleanupPolicy::Delete => 0,
            CleanupPolicy::Compact => 1,
        }
    }

    pub(crate) fn from_code(code: u64) -> Option<CleanupPolicy> {
        match code {
            0 => Some(CleanupPolicy::Delete),
            1 => Some(CleanupPolicy::Compact),
            _ => None,
        }
    }
}

/// A topic's own settings; `None` means the cluster's default (`TopicDefaults`).
/// Retention values follow Kafka: -1 means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_bytes: Option<i64>,
    pub retention_ms: Option<i64>,
    pub max_message_bytes: Option<u32>,
    pub segment_bytes: Option<u64>,
    pub cleanup_policy: Option<CleanupPolicy>,
}

impl TopicConfig {
    /// Sets `key` from its text form, as Kafka's CreateTopics and AlterConfigs carry it.
    pub fn set_text(&mut self, key: &str, value: &str) -> Result<(), MetaError> {
        let key = ConfigKey::parse(key)?;
        let invalid = |rule| MetaError::InvalidConfig { key, value: value.chars().take(100).collect(), rule };
        match key {
            ConfigKey::RetentionBytes => self.retention_bytes = Some(value.parse().map_err(|_| invalid(NUMBER))?),
            ConfigKey::RetentionMs => self.retention_ms = Some(value.parse().map_err(|_| invalid(NUMBER))?),
            ConfigKey::MaxMessageBytes => self.max_message_bytes = Some(value.parse().map_err(|_| invalid(NUMBER))?),
            ConfigKey::SegmentBytes => self.segment_bytes = Some(value.parse().map_err(|_| invalid(NUMBER))?),
            ConfigKey::CleanupPolicy => {
                let policy = [CleanupPolicy::Delete, CleanupPolicy::Compact].into_iter().find(|p| p.name() == value);
                self.cleanup_policy = Some(policy.ok_or_else(|| invalid("cleanup.policy is `delete` or `compact`"))?);
            }
        }
        Ok(())
    }

    /// Back to the cluster's default.
    pub fn reset(&mut self, key: ConfigKey) {
        match key {
            ConfigKey::RetentionBytes => self.retention_bytes = None,
            ConfigKey::RetentionMs => self.retention_ms = None,
            ConfigKey::MaxMessageBytes => self.max_message_bytes = None,
            ConfigKey::SegmentBytes => self.segment_bytes = None,
            ConfigKey::CleanupPolicy => self.cleanup_policy = None,
        }
    }

    /// The keys this config sets, in their text form (for describe).
    pub fn entries(&self) -> Vec<(ConfigKey, String)> {
        self.raw().into_iter().map(|(key, raw)| (key, text(key, raw))).collect()
    }

    /// `self` with every key that `other` sets taken from `other`.
    pub fn overlaid(&self, other: &TopicConfig) -> TopicConfig {
        TopicConfig {
            retention_bytes: other.retention_bytes.or(self.retention_bytes),
            retention_ms: other.retention_ms.or(self.retention_ms),
            max_message_bytes: other.max_message_bytes.or(self.max_message_bytes),
            segment_bytes: other.segment_bytes.or(self.segment_bytes),
            cleanup_policy: other.cleanup_policy.or(self.cleanup_policy),
        }
    }

    /// The values this topic runs with.
    pub fn effective(&self, defaults: &TopicDefaults) -> EffectiveConfig {
        let limit = |v: i64| u64::try_from(v).ok();
        EffectiveConfig {
            retention_bytes: limit(self.retention_bytes.unwrap_or(defaults.retention_bytes)),
            retention_ms: limit(self.retention_ms.unwrap_or(defaults.retention_ms)),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            segment_bytes: self.segment_bytes.unwrap_or(defaults.segment_bytes),
            cleanup_policy: self.cleanup_policy.unwrap_or_default(),
        }
    }

    /// Checks every value set, and the values in effect with `defaults` together.
    pub fn check(&self, internal: bool, defaults: &TopicDefaults) -> Result<(), MetaError> {
        for (key, raw) in self.raw() {
            check_value(key, raw)?;
        }
        if self.cleanup_policy == Some(CleanupPolicy::Compact) && !internal {
            return Err(MetaError::InvalidConfig {
                key: ConfigKey::CleanupPolicy,
                value: "compact".into(),
                rule: "compaction is reserved for internal topics such as __consumer_offsets",
            });
        }
        let effective = self.effective(defaults);
        if effective.segment_bytes < u64::from(effective.max_message_bytes) + SEGMENT_ROOM_BYTES {
            return Err(MetaError::InvalidConfig {
                key: ConfigKey::SegmentBytes,
                value: effective.segment_bytes.to_string(),
                rule: "segment.bytes must be at least max.message.bytes + 64 KiB, so that a segment holds a record",
            });
        }
        Ok(())
    }

    /// Every key set, with its value as the metadata encoding stores it (`codec.rs`).
    pub(crate) fn raw(&self) -> Vec<(ConfigKey, u64)> {
        let mut out = Vec::new();
        if let Some(v) = self.retention_bytes {
            out.push((ConfigKey::RetentionBytes, v as u64));
        }
        if let Some(v) = self.retention_ms {
            out.push((ConfigKey::RetentionMs, v as u64));
        }
        if let Some(v) = self.max_message_bytes {
            out.push((ConfigKey::MaxMessageBytes, u64::from(v)));
        }
        if let Some(v) = self.segment_bytes {
            out.push((ConfigKey::SegmentBytes, v));
        }
        if let Some(v) = self.cleanup_policy {
            out.push((ConfigKey::CleanupPolicy, v.code()));
        }
        out
    }

    /// Sets `key` from its stored value; `false` if the value cannot be one of that key's
    /// type. Ranges are checked by `check`, as for a value that came as text.
    pub(crate) fn set_raw(&mut self, key: ConfigKey, raw: u64) -> bool {
        match key {
            ConfigKey::RetentionBytes => self.retention_bytes = Some(raw as i64),
            ConfigKey::RetentionMs => self.retention_ms = Some(raw as i64),
            ConfigKey::MaxMessageBytes => match u32::try_from(raw) {
                Ok(v) => self.max_message_bytes = Some(v),
                Err(_) => return false,
            },
            ConfigKey::SegmentBytes => self.segment_bytes = Some(raw),
            ConfigKey::CleanupPolicy => match CleanupPolicy::from_code(raw) {
                Some(p) => self.cleanup_policy = Some(p),
                None => return false,
            },
        }
        true
    }
}

const NUMBER: &str = "the value is a whole number";

fn text(key: ConfigKey, raw: u64) -> String {
    match key {
        ConfigKey::RetentionBytes | ConfigKey::RetentionMs => (raw as i64).to_string(),
        ConfigKey::MaxMessageBytes | ConfigKey::SegmentBytes => raw.to_string(),
        ConfigKey::CleanupPolicy => CleanupPolicy::from_code(raw).unwrap_or_default().name().to_string(),
    }
}

/// The range rule of one key, checked on its stored value.
fn check_value(key: ConfigKey, raw: u64) -> Result<(), MetaError> {
    let rule = match key {
        ConfigKey::RetentionBytes if (raw as i64) < -1 => "retention.bytes is -1 (unlimited) or a number of bytes",
        ConfigKey::RetentionMs if (raw as i64) < -1 => "retention.ms is -1 (unlimited) or a number of milliseconds",
        ConfigKey::MaxMessageBytes if raw == 0 || raw > u64::from(MESSAGE_BYTES_MAX) => {
            "max.message.bytes is from 1 to 67108864 (64 MiB)"
        }
        ConfigKey::SegmentBytes if !(SEGMENT_BYTES_MIN..=segments::SEGMENT_BYTES_MAX).contains(&raw) => {
            "segment.bytes is from 1048576 (1 MiB) to 68719476736 (64 GiB)"
        }
        _ => return Ok(()),
    };
    Err(MetaError::InvalidConfig { key, value: text(key, raw), rule })
}

/// The cluster-wide values a topic uses for the keys it does not set. Every node applies
/// retention from the same metadata, so these live in the metadata and not in each node's
/// configuration (a node's own settings only seed them when the cluster first starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDefaults {
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub max_message_bytes: u32,
    pub segment_bytes: u64,
}

impl Default for TopicDefaults {
    /// keel's first version kept every record and took records up to 1 MiB in 128 MiB segments.
    fn default() -> TopicDefaults {
        TopicDefaults { retention_bytes: -1, retention_ms: -1, max_message_bytes: 1 << 20, segment_bytes: 128 << 20 }
    }
}

impl TopicDefaults {
    /// The defaults as a config that sets every key (Delete is the default cleanup policy).
    pub fn as_config(&self) -> TopicConfig {
        TopicConfig {
            retention_bytes: Some(self.retention_bytes),
            retention_ms: Some(self.retention_ms),
            max_message_bytes: Some(self.max_message_bytes),
            segment_bytes: Some(self.segment_bytes),
            cleanup_policy: None,
        }
    }
}

/// The values a topic runs with, its own or the defaults; unlimited retention is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveConfig {
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub max_message_bytes: u32,
    pub segment_bytes: u64,
    pub cleanup_policy: CleanupPolicy,
}

/// Settings of the whole cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Produce to an unknown topic creates it (with the default partitions and replicas).
    pub auto_create_topics: bool,
    /// Partitions of a topic created without saying how many.
    pub default_partitions: u32,
    /// Replicas of a partition created without saying how many; a cluster with fewer active
    /// brokers uses them all (DESIGN.md: min(3, nodes)).
    pub default_replication_factor: u16,
    /// Partitions the whole cluster may hold, all topics together.
    pub cluster_partitions_max: u32,
    pub topic_defaults: TopicDefaults,
    /// How long a partition remembers an idempotent producer that wrote nothing, in its
    /// log's time (Kafka's `producer.id.expiration.ms`; `producers/mod.rs`, "Time").
    pub producer_id_expiration_ms: u64,
    /// Idempotent producers one partition tracks; past it, the least recently active one is
    /// forgotten.
    pub producers_max: u32,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            auto_create_topics: false,
            default_partitions: 1,
            default_replication_factor: 3,
            cluster_partitions_max: 50_000,
            topic_defaults: TopicDefaults::default(),
            producer_id_expiration_ms: producers::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            producers_max: producers::PRODUCERS_MAX_DEFAULT as u32,
        }
    }
}

impl ClusterSettings {
    /// Checks each setting on its own; the state checks them against what exists.
    pub fn check(&self) -> Result<(), MetaError> {
        let invalid = |setting, value: u64, rule| Err(MetaError::InvalidSetting { setting, value, rule });
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&self.default_partitions) {
            return invalid("default_partitions", self.default_partitions.into(), "a topic has 1 to 10000 partitions");
        }
        if self.default_replication_factor == 0 {
            return invalid("default_replication_factor", 0, "a partition has at least one replica");
        }
        if !(1..=CLUSTER_PARTITIONS_LIMIT).contains(&self.cluster_partitions_max) {
            return invalid(
                "cluster_partitions_max",
                self.cluster_partitions_max.into(),
                "the cluster-wide cap is from 1 to 1000000 partitions",
            );
        }
        self.producer_config()?;
        self.topic_defaults.as_config().check(false, &self.topic_defaults)
    }

    /// The limits every partition's producer table runs with (`producers/`): all replicas of
    /// a partition take them from here, so that they forget the same producers.
    pub fn producer_config(&self) -> Result<ProducerConfig, producers::ConfigError> {
        let producers_max = usize::try_from(self.producers_max).unwrap_or(usize::MAX);
        ProducerConfig::new(self.producer_id_expiration_ms, producers_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(result: Result<(), MetaError>) -> &'static str {
        match result {
            Err(MetaError::InvalidConfig { rule, .. }) => rule,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    fn checked(key: &str, value: &str) -> Result<(), MetaError> {
        let mut config = TopicConfig::default();
        config.set_text(key, value)?;
        config.check(false, &TopicDefaults::default())
    }

    #[test]
    fn every_key_is_set_from_its_kafka_text() {
        let mut config = TopicConfig::default();
        for (key, value) in [
            ("retention.bytes", "1000"),
            ("retention.ms", "-1"),
            ("max.message.bytes", "2048"),
            ("segment.bytes", "2097152"),
            ("cleanup.policy", "delete"),
        ] {
            config.set_text(key, value).unwrap();
        }
        let expected = TopicConfig {
            retention_bytes: Some(1000),
            retention_ms: Some(-1),
            max_message_bytes: Some(2048),
            segment_bytes: Some(2 << 20),
            cleanup_policy: Some(CleanupPolicy::Delete),
        };
        assert_eq!(config, expected);
        let texts: Vec<String> = config.entries().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            texts,
            [
                "retention.bytes=1000",
                "retention.ms=-1",
                "max.message.bytes=2048",
                "segment.bytes=2097152",
                "cleanup.policy=delete"
            ]
        );
        for key in ConfigKey::ALL {
            config.reset(key);
        }
        assert_eq!(config, TopicConfig::default());
    }

    #[test]
    fn an_unknown_config_key_is_refused_by_name() {
        let error = TopicConfig::default().set_text("retention.hours", "1").unwrap_err();
        assert_eq!(error, MetaError::UnknownConfigKey { key: "retention.hours".into() });
        assert!(error.to_string().contains("\"retention.hours\""), "{error}");
    }

    #[test]
    fn a_value_that_is_not_a_number_is_refused() {
        assert!(rule_of(checked("retention.ms", "a week")).contains("whole number"));
        assert!(rule_of(checked("cleanup.policy", "compact,delete")).contains("`delete` or `compact`"));
    }

    #[test]
    fn retention_is_unlimited_or_not_negative() {
        assert!(rule_of(checked("retention.bytes", "-2")).contains("retention.bytes is -1"));
        assert!(rule_of(checked("retention.ms", "-2")).contains("retention.ms is -1"));
        assert_eq!(checked("retention.bytes", "0"), Ok(()));
        assert_eq!(checked("retention.ms", "-1"), Ok(()));
    }

    #[test]
    fn max_message_bytes_is_from_one_byte_to_64_mib() {
        assert!(rule_of(checked("max.message.bytes", "0")).contains("max.message.bytes is from 1"));
        let over = (u64::from(MESSAGE_BYTES_MAX) + 1).to_string();
        assert!(rule_of(checked("max.message.bytes", &over)).contains("max.message.bytes is from 1"));
        assert_eq!(checked("max.message.bytes", "1"), Ok(()));
    }

    #[test]
    fn segment_bytes_is_from_1_mib_to_the_segment_maximum() {
        let under = (SEGMENT_BYTES_MIN - 1).to_string();
        assert!(rule_of(checked("segment.bytes", &under)).contains("segment.bytes is from"));
        let over = (segments::SEGMENT_BYTES_MAX + 1).to_string();
        assert!(rule_of(checked("segment.bytes", &over)).contains("segment.bytes is from"));
    }

    #[test]
    fn a_segment_must_hold_the_largest_record() {
        let segment_bytes = 2 << 20;
        let mut config = TopicConfig { segment_bytes: Some(segment_bytes), ..TopicConfig::default() };
        config.max_message_bytes = Some((segment_bytes - SEGMENT_ROOM_BYTES) as u32);
        assert_eq!(config.check(false, &TopicDefaults::default()), Ok(()));
        config.max_message_bytes = Some((segment_bytes - SEGMENT_ROOM_BYTES + 1) as u32);
        assert!(rule_of(config.check(false, &TopicDefaults::default())).contains("a segment holds a record"));
        // The rule holds on the values in effect: here the default record size meets a small segment.
        let defaults = TopicDefaults { max_message_bytes: MESSAGE_BYTES_MAX, ..TopicDefaults::default() };
        let small = TopicConfig { segment_bytes: Some(SEGMENT_BYTES_MIN), ..TopicConfig::default() };
        assert!(rule_of(small.check(false, &defaults)).contains("a segment holds a record"));
    }

    #[test]
    fn compaction_is_reserved_for_internal_topics() {
        let config = TopicConfig { cleanup_policy: Some(CleanupPolicy::Compact), ..TopicConfig::default() };
        assert!(rule_of(config.check(false, &TopicDefaults::default())).contains("reserved for internal topics"));
        assert_eq!(config.check(true, &TopicDefaults::default()), Ok(()));
    }

    #[test]
    fn effective_values_fall_back_to_the_defaults() {
        let defaults = TopicDefaults { retention_bytes: 5, retention_ms: -1, max_message_bytes: 7, segment_bytes: 9 };
        let config = TopicConfig { retention_ms: Some(60_000), ..TopicConfig::default() };
        let effective = config.effective(&defaults);
        assert_eq!(
            effective,
            EffectiveConfig {
                retention_bytes: Some(5),
                retention_ms: Some(60_000),
                max_message_bytes: 7,
                segment_bytes: 9,
                cleanup_policy: CleanupPolicy::Delete,
            }
        );
        assert_eq!(TopicConfig::default().effective(&defaults).retention_ms, None, "-1 is unlimited");
    }

    #[test]
    fn cluster_settings_are_checked_each_against_its_range() {
        assert_eq!(ClusterSettings::default().check(), Ok(()));
        let setting_of = |s: ClusterSettings| match s.check() {
            Err(MetaError::InvalidSetting { setting, .. }) => setting,
            other => panic!("expected a refused setting, got {other:?}"),
        };
        let base = ClusterSettings::default;
        assert_eq!(setting_of(ClusterSettings { default_partitions: 0, ..base() }), "default_partitions");
        assert_eq!(setting_of(ClusterSettings { default_partitions: 10_001, ..base() }), "default_partitions");
        assert_eq!(
            setting_of(ClusterSettings { default_replication_factor: 0, ..base() }),
            "default_replication_factor"
        );
        assert_eq!(setting_of(ClusterSettings { cluster_partitions_max: 0, ..base() }), "cluster_partitions_max");
        let over = CLUSTER_PARTITIONS_LIMIT + 1;
        assert_eq!(setting_of(ClusterSettings { cluster_partitions_max: over, ..base() }), "cluster_partitions_max");
        let defaults = TopicDefaults { retention_ms: -5, ..TopicDefaults::default() };
        assert!(rule_of(ClusterSettings { topic_defaults: defaults, ..base() }.check()).contains("retention.ms"));
    }

    #[test]
    fn producer_limits_are_checked_and_name_the_setting() {
        let base = ClusterSettings::default;
        let refused = |s: ClusterSettings| s.check().expect_err("out of range").to_string();
        let message = refused(ClusterSettings { producers_max: 0, ..base() });
        assert!(message.contains("producers_max must be from 1 to 1048576"), "{message}");
        let over = u32::try_from(producers::PRODUCERS_MAX_LIMIT + 1).unwrap();
        assert!(refused(ClusterSettings { producers_max: over, ..base() }).contains("producers_max"));
        let message = refused(ClusterSettings { producer_id_expiration_ms: 0, ..base() });
        assert!(message.contains("producer_id_expiration_ms must be from 1"), "{message}");
        let over = producers::PRODUCER_ID_EXPIRATION_MS_LIMIT + 1;
        assert!(refused(ClusterSettings { producer_id_expiration_ms: over, ..base() }).contains("expiration"));
        let small = ClusterSettings { producer_id_expiration_ms: 2000, producers_max: 1, ..base() };
        assert_eq!(small.check(), Ok(()));
        assert_eq!(small.producer_config(), ProducerConfig::new(2000, 1));
    }

    #[test]
    fn the_default_producer_limits_are_those_of_the_producer_table() {
        let settings = ClusterSettings::default();
        assert_eq!(settings.producer_config(), Ok(ProducerConfig::default()));
        assert_eq!(settings.producer_id_expiration_ms, 7 * 24 * 3600 * 1000, "7 days, documented in README");
    }
}
