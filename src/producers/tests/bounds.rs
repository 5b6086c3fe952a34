//! Memory is bounded: idle producers expire in the log's time, and at most `producers_max` are
//! tracked, the least recently active evicted first.

use crate::producers::*;

use super::{Log, batch};

fn config(expiration_ms: u64, producers_max: usize) -> ProducerConfig {
    ProducerConfig::new(expiration_ms, producers_max).unwrap()
}

#[test]
fn keel_forgets_idle_producers_after_seven_days_by_default() {
    assert_eq!(ProducerConfig::default().producer_id_expiration_ms(), 7 * 24 * 3600 * 1000);
}

#[test]
fn a_producer_idle_longer_than_the_expiry_is_forgotten() {
    let mut log = Log::new(config(1000, 100));
    log.commit_at(batch(1, 0, 0, 1), 10_000);
    log.commit_at(batch(2, 0, 0, 1), 10_500);
    let (_, forgotten) = log.commit_at(ProducerBatch::plain(1), 11_000);
    assert_eq!(forgotten, Forgotten::default(), "idle for exactly the expiry is not longer than it");
    let (_, forgotten) = log.commit_at(ProducerBatch::plain(1), 11_001);
    assert_eq!(forgotten, Forgotten { expired: 1, evicted: 0 });
    assert_eq!(log.table.epoch_of(1), None);
    assert_eq!(log.table.epoch_of(2), Some(0));
    // Forgotten, it is an unknown producer again: accepted at any sequence.
    assert_eq!(log.table.check(&batch(1, 0, 57, 1)), Verdict::Append);
}

#[test]
fn expiry_follows_the_log_time_not_the_clients_clock() {
    let mut log = Log::new(config(1000, 100));
    log.commit_at(batch(1, 0, 0, 1), 50_000);
    // A client whose clock lags far behind is seen at the log's time, not at its own.
    log.commit_at(batch(2, 0, 0, 1), 5);
    assert_eq!(log.table.clock_ms(), 50_000, "the log's time never goes back");
    log.commit_at(batch(1, 0, 1, 1), 50_900);
    let (_, forgotten) = log.commit_at(ProducerBatch::plain(1), 50_950);
    assert_eq!(forgotten, Forgotten::default());
    assert_eq!(log.table.epoch_of(2), Some(0), "producer 2 was seen at 50 000, 950 ms ago");
    // And an idle partition forgets nothing: time moves only with entries.
    log.commit_control();
    assert_eq!(log.table.len(), 2);
}

#[test]
fn the_least_recently_active_producer_is_evicted_at_producers_max() {
    let mut log = Log::new(config(PRODUCER_ID_EXPIRATION_MS_DEFAULT, 3));
    for producer_id in 1..=3 {
        log.commit(batch(producer_id, 0, 0, 1));
    }
    log.commit(batch(1, 0, 1, 1));
    let (_, forgotten) = log.commit_at(batch(4, 0, 0, 1), 0);
    assert_eq!(forgotten, Forgotten { expired: 0, evicted: 1 });
    assert_eq!(log.table.len(), 3);
    assert_eq!(log.table.epoch_of(2), None, "producer 2 was the least recently active");
    for producer_id in [1, 3, 4] {
        assert!(log.table.epoch_of(producer_id).is_some(), "producer {producer_id} is kept");
    }
}

#[test]
fn producers_max_must_be_at_least_one_and_at_most_the_limit() {
    assert_eq!(ProducerConfig::new(1, 0), Err(ConfigError::ProducersMax(0)));
    assert!(ProducerConfig::new(1, PRODUCERS_MAX_LIMIT + 1).is_err());
    assert!(ProducerConfig::new(1, PRODUCERS_MAX_LIMIT).is_ok());
}

#[test]
fn the_expiry_must_be_at_least_a_millisecond_and_at_most_a_year() {
    assert_eq!(ProducerConfig::new(0, 1), Err(ConfigError::ProducerIdExpirationMs(0)));
    let over = PRODUCER_ID_EXPIRATION_MS_LIMIT + 1;
    assert_eq!(ProducerConfig::new(over, 1), Err(ConfigError::ProducerIdExpirationMs(over)));
    assert!(ProducerConfig::new(PRODUCER_ID_EXPIRATION_MS_LIMIT, 1).is_ok());
    let message = ConfigError::ProducerIdExpirationMs(0).to_string();
    assert!(message.starts_with("producer_id_expiration_ms must be from 1"), "{message}");
}
