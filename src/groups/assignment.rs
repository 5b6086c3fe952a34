//! Kafka's ConsumerProtocol, which the coordinator passes through without reading: the
//! subscription a consumer sends in JoinGroup and the assignment its leader sends in
//! SyncGroup. keel's own consumer writes them (so `kafka-consumer-groups --describe` and
//! Kafka clients in the same group read its members), and `keel group describe` reads any
//! consumer's. Also the two assignors keel's consumer offers, by Kafka's names.
//!
//! Both are Kafka's classic big-endian encoding (strings with an i16 length, arrays and
//! bytes with an i32 one, -1 for null). Version 0 is written; any version is read by its
//! version 0 fields, since later versions only append fields.
//!
//! ```text
//! Subscription  i16 version, [string topic], bytes user_data
//! Assignment    i16 version, [string topic, [i32 partition]], bytes user_data
//! ```

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol type of consumer groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Why a subscription or assignment could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed consumer protocol bytes: {what}")]
pub struct ProtocolError {
    what: &'static str,
}

fn malformed(what: &'static str) -> ProtocolError {
    ProtocolError { what }
}

/// How a group's leader divides the partitions of the subscribed topics among the members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, consecutive ranges of partitions to the members in member-id order, the
    /// first ones one more when they do not divide evenly (Kafka's `range`).
    Range,
    /// Every partition of every topic in turn to the next member subscribed to its topic
    /// (Kafka's `roundrobin`).
    RoundRobin,
}

impl Assignor {
    /// The protocol name Kafka's assignor of the same rule uses.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    pub fn by_name(name: &str) -> Option<Assignor> {
        [Assignor::Range, Assignor::RoundRobin].into_iter().find(|a| a.name() == name)
    }

    /// The partitions of each member. `members`: each member's id and subscribed topics;
    /// `partitions`: each topic's partition count (a topic missing from it has none).
    /// Every member gets an entry, an empty one if nothing falls to it.
    pub fn assign(
        self,
        members: &[(String, Vec<String>)],
        partitions: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, Vec<(String, u32)>> {
        let mut out: BTreeMap<String, Vec<(String, u32)>> =
            members.iter().map(|(id, _)| (id.clone(), Vec::new())).collect();
        let topics: BTreeSet<&String> = members.iter().flat_map(|(_, topics)| topics).collect();
        let subscribers = |topic: &String| -> Vec<&String> {
            let ids: BTreeSet<&String> =
                members.iter().filter(|(_, topics)| topics.contains(topic)).map(|(id, _)| id).collect();
            ids.into_iter().collect()
        };
        match self {
            Assignor::Range => {
                for topic in topics {
                    let ids = subscribers(topic);
                    let count = partitions.get(topic).copied().unwrap_or(0) as usize;
                    let (each, extra) = (count / ids.len(), count % ids.len());
                    let mut next = 0;
                    for (i, id) in ids.into_iter().enumerate() {
                        let take = each + usize::from(i < extra);
                        let list = out.get_mut(id).expect("every member has an entry");
                        list.extend((next..next + take).map(|p| (topic.clone(), p as u32)));
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let ids: Vec<String> = out.keys().cloned().collect();
                let mut turn = 0;
                for topic in topics {
                    let wanting: BTreeSet<&String> = subscribers(topic).into_iter().collect();
                    for p in 0..partitions.get(topic).copied().unwrap_or(0) {
                        // The next member in the circle that subscribes to this topic.
                        while !wanting.contains(&ids[turn % ids.len()]) {
                            turn += 1;
                        }
                        let id = &ids[turn % ids.len()];
                        out.get_mut(id).expect("every member has an entry").push((topic.clone(), p));
                        turn += 1;
                    }
                }
            }
        }
        out
    }
}

/// A subscription of version 0 to `topics`.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    buf.put_i32(topics.len() as i32);
    for topic in topics {
        put_string(&mut buf, topic);
    }
    buf.put_i32(-1);
    buf.freeze()
}

/// The topics of a subscription.
pub fn decode_subscription(mut bytes: &[u8]) -> Result<Vec<String>, ProtocolError> {
    version(&mut bytes)?;
    let n = count(&mut bytes, 2)?;
    (0..n).map(|_| string(&mut bytes)).collect()
}

/// An assignment of version 0 of `partitions`, grouped by topic in the order given.
pub fn encode_assignment(partitions: &[(String, u32)]) -> Bytes {
    let mut by_topic: Vec<(&str, Vec<u32>)> = Vec::new();
    for (topic, p) in partitions {
        match by_topic.iter_mut().find(|(t, _)| t == topic) {
            Some((_, list)) => list.push(*p),
            None => by_topic.push((topic, vec![*p])),
        }
    }
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    buf.put_i32(by_topic.len() as i32);
    for (topic, list) in by_topic {
        put_string(&mut buf, topic);
        buf.put_i32(list.len() as i32);
        for p in list {
            buf.put_i32(p as i32);
        }
    }
    buf.put_i32(-1);
    buf.freeze()
}

/// The partitions of an assignment; empty bytes (a member the leader gave nothing, or a
/// group that is not stable) are no partitions.
pub fn decode_assignment(mut bytes: &[u8]) -> Result<Vec<(String, u32)>, ProtocolError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    version(&mut bytes)?;
    let topics = count(&mut bytes, 2 + 4)?;
    let mut out = Vec::new();
    for _ in 0..topics {
        let topic = string(&mut bytes)?;
        let n = count(&mut bytes, 4)?;
        for _ in 0..n {
            let p = u32::try_from(bytes.get_i32()).map_err(|_| malformed("a negative partition"))?;
            out.push((topic.clone(), p));
        }
    }
    Ok(out)
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).expect("topic names are at most 249 bytes");
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

fn version(bytes: &mut &[u8]) -> Result<(), ProtocolError> {
    if bytes.remaining() < 2 || bytes.get_i16() < 0 {
        return Err(malformed("no version"));
    }
    Ok(())
}

/// An array's count, checked against the bytes left (each item takes `min_item` at least).
fn count(bytes: &mut &[u8], min_item: usize) -> Result<usize, ProtocolError> {
    if bytes.remaining() < 4 {
        return Err(malformed("truncated array count"));
    }
    let n = usize::try_from(bytes.get_i32()).map_err(|_| malformed("a negative array count"))?;
    if n.saturating_mul(min_item) > bytes.remaining() {
        return Err(malformed("an array count past the end"));
    }
    Ok(n)
}

fn string(bytes: &mut &[u8]) -> Result<String, ProtocolError> {
    if bytes.remaining() < 2 {
        return Err(malformed("truncated string length"));
    }
    let len = usize::try_from(bytes.get_i16()).map_err(|_| malformed("a null string"))?;
    if len > bytes.remaining() {
        return Err(malformed("a string past the end"));
    }
    let s = String::from_utf8(bytes[..len].to_vec()).map_err(|_| malformed("a string that is not UTF-8"))?;
    bytes.advance(len);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter().map(|(id, topics)| (id.to_string(), topics.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn parts(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn range_gives_consecutive_partitions_the_first_members_one_more() {
        let counts = BTreeMap::from([("t".to_string(), 7)]);
        let out = Assignor::Range.assign(&members(&[("b", &["t"]), ("a", &["t"]), ("c", &["t"])]), &counts);
        assert_eq!(out["a"], parts(&[("t", 0), ("t", 1), ("t", 2)]));
        assert_eq!(out["b"], parts(&[("t", 3), ("t", 4)]));
        assert_eq!(out["c"], parts(&[("t", 5), ("t", 6)]));
    }

    #[test]
    fn round_robin_deals_to_subscribers_only_and_every_partition_once() {
        let counts = BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 2)]);
        let out = Assignor::RoundRobin.assign(&members(&[("a", &["t", "u"]), ("b", &["t"]), ("c", &[])]), &counts);
        assert_eq!(out["a"], parts(&[("t", 0), ("t", 2), ("u", 0), ("u", 1)]));
        assert_eq!(out["b"], parts(&[("t", 1)]));
        assert_eq!(out["c"], Vec::new());
    }

    #[test]
    fn more_members_than_partitions_leaves_some_empty() {
        let counts = BTreeMap::from([("t".to_string(), 1)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let out = assignor.assign(&members(&[("a", &["t"]), ("b", &["t"])]), &counts);
            assert_eq!(out["a"], parts(&[("t", 0)]), "{assignor:?}");
            assert!(out["b"].is_empty(), "{assignor:?}");
        }
    }

    #[test]
    fn subscription_and_assignment_round_trip() {
        let topics = vec!["orders".to_string(), "refunds".to_string()];
        assert_eq!(decode_subscription(&encode_subscription(&topics)).unwrap(), topics);
        let assigned = parts(&[("orders", 0), ("orders", 3), ("refunds", 1)]);
        assert_eq!(decode_assignment(&encode_assignment(&assigned)).unwrap(), assigned);
        assert_eq!(decode_assignment(&[]).unwrap(), Vec::new());
    }

    /// The bytes Kafka's Java client writes for an assignment of orders-0 and orders-1
    /// (version 1, which appends nothing after user_data for an assignment).
    #[test]
    fn reads_a_kafka_assignment() {
        let mut kafka = vec![0, 1, 0, 0, 0, 1, 0, 6];
        kafka.extend_from_slice(b"orders");
        kafka.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_assignment(&kafka).unwrap(), parts(&[("orders", 0), ("orders", 1)]));
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let good = encode_assignment(&parts(&[("orders", 0), ("orders", 1)]));
        for cut in 1..good.len() - 4 {
            assert!(decode_assignment(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_assignment(&[0, 0, 0, 0, 0, 1, 0xff, 0xff]).is_err());
    }
}
