//! Which partition a record goes to, as Kafka's default partitioner decides: a record with
//! a key goes to `murmur2(key) mod partitions` (the same partition as with any Kafka client,
//! so keyed records keep their order across tools); a record without one goes to the
//! current "sticky" partition, which moves on, round robin, once a batch's worth of records
//! went to it (KIP-480: fewer, fuller batches than a partition per record).

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): 32 bits, seed
/// 0x9747b28c, the input read as little-endian 4-byte words.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a keyed record among `partitions`.
pub fn partition_of_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Where records without a key go: one partition at a time.
#[derive(Debug, Default)]
pub struct Sticky {
    current: u32,
    bytes: usize,
}

impl Sticky {
    /// The partition for an unkeyed record of `bytes`; after `batch_bytes` went to one
    /// partition, the next one takes over.
    pub fn next(&mut self, bytes: usize, partitions: u32, batch_bytes: usize) -> u32 {
        if self.bytes >= batch_bytes {
            self.current = self.current.wrapping_add(1);
            self.bytes = 0;
        }
        self.bytes += bytes;
        self.current % partitions.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed by kafka-python 2.2.21's `kafka.partitioner.default.murmur2`, a port of
    /// the Java client's: keyed records land where every Kafka client puts them.
    #[test]
    fn murmur2_agrees_with_the_kafka_clients() {
        let cases: [(&[u8], u32, u32); 7] = [
            (b"", 275646681, 1),
            (b"a", 2731586172, 4),
            (b"21", 3321034988, 4),
            (b"foobar", 3504634814, 6),
            (b"kafka", 3496464228, 4),
            (b"123456789", 2472730214, 6),
            (b"orders-key-7", 836182988, 4),
        ];
        for (key, hash, partition_of_8) in cases {
            assert_eq!(murmur2(key), hash, "{key:?}");
            assert_eq!(partition_of_key(key, 8), partition_of_8, "{key:?}");
        }
    }

    #[test]
    fn unkeyed_records_fill_one_partition_then_move_on() {
        let mut sticky = Sticky::default();
        let picks: Vec<u32> = (0..8).map(|_| sticky.next(100, 3, 250)).collect();
        assert_eq!(picks, [0, 0, 0, 1, 1, 1, 2, 2]);
    }
}
