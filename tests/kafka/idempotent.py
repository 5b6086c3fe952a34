"""confluent-kafka (librdkafka) with enable.idempotence=true: every record exactly once, in
order per partition, even while a partition's leader stops and comes back.

Creates a 3-partition topic with 3 replicas, prints the leader of partition 0 as
`leader N`, then `producing`, and produces 20 000 numbered records round-robin over the
partitions at a steady pace for about 20 s; whoever runs this may stop leaders meanwhile
and let them go on (tests/kafka_clients.rs does, with SIGSTOP and SIGCONT), so that
batches time out at a leader that may have replicated them and are retried at the next.
Then it waits for every delivery report (none may fail), consumes each partition by
assign() from offset 0 to its high watermark, and checks that each holds exactly the
records sent to it, each once, in the order they were produced, at the offsets their
delivery reports gave.

    target/kafka-venv/main/bin/python tests/kafka/idempotent.py BOOTSTRAP [--topic T]

IDEMPOTENT_RECORDS and IDEMPOTENT_SECONDS change the count and the pace (run-all, where
nothing stops a leader, produces 2 000 records in 2 s so as not to load the machine while
other tests run).
"""

import os
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, check_exactly_once, fail, ok

RECORDS = int(os.environ.get("IDEMPOTENT_RECORDS", "20000"))
PARTITIONS = 3
PRODUCE_S = float(os.environ.get("IDEMPOTENT_SECONDS", "20"))
WAIT_MAX_S = 180


def leader_of(admin, topic, partition):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        p = admin.list_topics(topic, timeout=10).topics[topic].partitions.get(partition)
        if p is not None and p.leader >= 0:
            return p.leader
        time.sleep(0.1)
    fail(f"{topic}/{partition} has no leader after 30 s")


def consume(bootstrap, topic, partition):
    """Every record of a partition, as (offset, value), from 0 to its high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "auto.offset.reset": "error"})
    tp = TopicPartition(topic, partition, 0)
    consumer.assign([tp])
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
    found = []
    position = 0
    deadline = time.monotonic() + WAIT_MAX_S
    while position < high and time.monotonic() < deadline:
        for m in consumer.consume(10_000, timeout=1.0):
            if m.error():
                fail(f"consume {topic}/{partition}: {m.error()}")
            found.append((m.offset(), m.value().decode()))
            position = m.offset() + 1
    consumer.close()
    check(position >= high, f"{topic}/{partition}: consumed up to {position}, the high watermark is {high}")
    return found


def main():
    a = args(__doc__)
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    try:
        new = NewTopic(a.topic, num_partitions=PARTITIONS, replication_factor=3)
        admin.create_topics([new])[a.topic].result(timeout=60)
    except KafkaException as e:
        fail(f"create topic {a.topic}: {e}")
    print(f"leader {leader_of(admin, a.topic, 0)}", flush=True)

    # Short request timeouts, so that batches sent to a stopped leader are retried at the
    # next one while the stopped one may still append them when it resumes.
    producer = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "request.timeout.ms": 2_000, "message.timeout.ms": 120_000,
                         "retry.backoff.ms": 50})
    delivered = {}
    failed = []

    def report(i, err, msg):
        if err is None:
            delivered[i] = (msg.partition(), msg.offset())
        else:
            failed.append((i, str(err)))

    print("producing", flush=True)
    start = time.monotonic()
    chunk = 100
    for first in range(0, RECORDS, chunk):
        for i in range(first, first + chunk):
            while True:
                try:
                    producer.produce(a.topic, value=f"r-{i}".encode(), partition=i % PARTITIONS,
                                     on_delivery=lambda err, msg, i=i: report(i, err, msg))
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
        # A steady pace: the whole run takes about PRODUCE_S.
        ahead = start + PRODUCE_S * (first + chunk) / RECORDS - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    left = producer.flush(WAIT_MAX_S)
    check(left == 0, f"{left} records still without a delivery report after {WAIT_MAX_S} s")
    check(not failed, f"{len(failed)} records reported failed, e.g. {failed[:3]}")
    ok(f"produced {RECORDS} records idempotently in {time.monotonic() - start:.1f} s, every one acknowledged")

    for partition in range(PARTITIONS):
        found = consume(a.bootstrap, a.topic, partition)
        check_exactly_once(a.topic, partition, found, delivered, RECORDS, PARTITIONS)


if __name__ == "__main__":
    main()
