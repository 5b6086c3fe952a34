"""kafka-python 3 (idempotent by default: enable_idempotence=True, 5 requests in flight):
every acknowledged record exactly once, in order per partition, while whoever runs this
kills and pauses partition leaders.

Creates a 3-partition topic with 3 replicas, prints the leader of partition 0 as
`leader N`, then `producing`, and produces IDEMPOTENT_RECORDS numbered records (default
6 000) round-robin over the partitions at a steady pace for about IDEMPOTENT_SECONDS
(default 15 s), with a 2 s request timeout so that batches sent to a stopped leader are
retried at the next one. Then it waits for every send (none may fail), reads each
partition from offset 0 to its end, and checks that it holds exactly the records sent to
it, each once, in the order produced, at the offsets the sends reported.

    target/kafka-venv/kp3/bin/python tests/kafka/idempotent_kp3.py BOOTSTRAP [--topic T]
"""

import os
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from common import args, check, check_exactly_once, fail, ok

RECORDS = int(os.environ.get("IDEMPOTENT_RECORDS", "6000"))
PARTITIONS = 3
PRODUCE_S = float(os.environ.get("IDEMPOTENT_SECONDS", "15"))
WAIT_MAX_S = 180


def leader_of(admin, topic, partition):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for t in admin.describe_topics([topic]):
            for p in t["partitions"]:
                if p["partition_index"] == partition and p["leader_id"] >= 0:
                    return p["leader_id"]
        time.sleep(0.1)
    fail(f"{topic}/{partition} has no leader after 30 s")


def consume(bootstrap, topic, partition):
    """Every record of a partition, as (offset, value), from 0 to its end offset."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", request_timeout_ms=30_000)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    high = consumer.end_offsets([tp])[tp]
    found = []
    deadline = time.monotonic() + WAIT_MAX_S
    while consumer.position(tp) < high and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            found.extend((r.offset, r.value.decode()) for r in records)
    position = consumer.position(tp)
    consumer.close()
    check(position >= high, f"{topic}/{partition}: consumed up to {position}, the end offset is {high}")
    return found


def main():
    a = args(__doc__)
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=60_000)
    try:
        admin.create_topics([NewTopic(a.topic, num_partitions=PARTITIONS, replication_factor=3)])
    except KafkaError as e:
        fail(f"create topic {a.topic}: {e!r}")
    print(f"leader {leader_of(admin, a.topic, 0)}", flush=True)
    admin.close()

    # The defaults of kafka-python 3 but the timeouts: idempotence on, acks=all, 5 in flight.
    producer = KafkaProducer(bootstrap_servers=a.bootstrap, linger_ms=5, request_timeout_ms=2_000,
                             delivery_timeout_ms=120_000, retry_backoff_ms=50)
    check(producer.config["enable_idempotence"], "kafka-python 3 is idempotent by default")
    futures = []
    print("producing", flush=True)
    start = time.monotonic()
    chunk = 50
    for first in range(0, RECORDS, chunk):
        for i in range(first, first + chunk):
            futures.append(producer.send(a.topic, value=f"r-{i}".encode(), partition=i % PARTITIONS))
        ahead = start + PRODUCE_S * (first + chunk) / RECORDS - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(timeout=WAIT_MAX_S)
    delivered = {}
    failed = []
    for i, future in enumerate(futures):
        try:
            meta = future.get(timeout=WAIT_MAX_S)
            delivered[i] = (meta.partition, meta.offset)
        except KafkaError as e:
            failed.append((i, repr(e)))
    producer.close()
    check(not failed, f"{len(failed)} records failed, e.g. {failed[:3]}")
    ok(f"produced {RECORDS} records with kafka-python 3 in {time.monotonic() - start:.1f} s, every one acknowledged")

    for partition in range(PARTITIONS):
        found = consume(a.bootstrap, a.topic, partition)
        check_exactly_once(a.topic, partition, found, delivered, RECORDS, PARTITIONS)


if __name__ == "__main__":
    main()
