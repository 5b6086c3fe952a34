"""kafka-python consumer groups: subscribe(), commit(), and a new member resuming.

On a fresh 3-partition topic: a KafkaConsumer with a group_id subscribes, reads every
record produced, commits and closes; records produced after are read by a new consumer of
the group, which starts at the committed offsets (each new record once, none earlier).
kafka-python 2.x infers the broker's version from ApiVersions and so may pin old group
API versions (OffsetCommit v2, OffsetFetch v1); 3.x negotiates.

    target/kafka-venv/main/bin/python tests/kafka/kafka_python_groups.py BOOTSTRAP
"""

import time

import kafka
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from common import args, check, fail, ok

PARTITIONS = 3
WAIT_MAX_S = 120


def produce(bootstrap, topic, first, count):
    options = {"bootstrap_servers": bootstrap, "acks": "all"}
    if not kafka.__version__.startswith("2."):
        # kafka-python 3 is idempotent by default: keel does not advertise InitProducerId yet.
        options["enable_idempotence"] = False
    producer = KafkaProducer(**options)
    for i in range(first, first + count):
        producer.send(topic, str(i).encode(), partition=i % PARTITIONS).get(timeout=WAIT_MAX_S)
    producer.close()


def read(bootstrap, topic, group, count):
    """Reads `count` records as a member of `group`, commits, closes; answers their numbers."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
    consumer.subscribe([topic])
    seen = []
    deadline = time.monotonic() + WAIT_MAX_S
    while len(seen) < count:
        if time.monotonic() > deadline:
            fail(f"group {group}: read {len(seen)} of {count} records in {WAIT_MAX_S} s")
        for records in consumer.poll(timeout_ms=500).values():
            seen.extend(int(r.value) for r in records)
    consumer.commit()
    # Anything more would be a record read twice or one from before the commit.
    for records in consumer.poll(timeout_ms=1_000).values():
        seen.extend(int(r.value) for r in records)
    consumer.close()
    return seen


def main():
    a = args(__doc__, topics=("topic", "group"))
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    admin.create_topics([NewTopic(a.topic, num_partitions=PARTITIONS, replication_factor=3)])
    admin.close()
    produce(a.bootstrap, a.topic, 0, 300)
    first = read(a.bootstrap, a.topic, a.group, 300)
    check(sorted(first) == list(range(300)), f"first member read {len(first)} records, not 0..300 once each")
    ok(f"kafka-python {kafka.__version__}: a group member read 300 records once each and committed")
    produce(a.bootstrap, a.topic, 300, 150)
    second = read(a.bootstrap, a.topic, a.group, 150)
    check(sorted(second) == list(range(300, 450)),
          f"the new member read {sorted(second)[:5]}... ({len(second)}), not 300..450 once each")
    ok(f"kafka-python {kafka.__version__}: a new member resumed at the committed offsets")


if __name__ == "__main__":
    main()
