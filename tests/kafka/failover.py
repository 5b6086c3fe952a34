"""confluent-kafka (librdkafka) producing with acks=all while the partition's leader dies.

Creates a 1-partition topic with 3 replicas, prints its leader's broker id as
`leader N`, then `producing` and produces numbered records at a steady pace for
8 s; whoever runs this kills the leader meanwhile (tests/kafka_clients.rs does,
with kill -9). Then it waits for every delivery report, consumes the partition by
assign() from offset 0, and checks that every record with a successful delivery report
is there, at the offset its report gave. Reports that failed are counted, not errors:
acks=all promises only what was acknowledged.

    target/kafka-venv/main/bin/python tests/kafka/failover.py BOOTSTRAP [--topic T]
"""

import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, fail, ok

WAIT_MAX_S = 120


def leader_of(admin, topic):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        partition = admin.list_topics(topic, timeout=10).topics[topic].partitions.get(0)
        if partition is not None and partition.leader >= 0:
            return partition.leader
        time.sleep(0.1)
    fail(f"{topic} has no leader after 30 s")


def main():
    a = args(__doc__)
    seconds = 8.0
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    try:
        admin.create_topics([NewTopic(a.topic, num_partitions=1, replication_factor=3)])[a.topic].result(timeout=60)
    except KafkaException as e:
        fail(f"create topic {a.topic}: {e}")
    print(f"leader {leader_of(admin, a.topic)}", flush=True)

    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False, "message.timeout.ms": 60_000,
                         "retries": 1_000_000, "retry.backoff.ms": 50})
    acked = {}
    failed = []

    def report(i, err, msg):
        if err is None:
            acked[i] = msg.offset()
        else:
            failed.append((i, str(err)))

    print("producing", flush=True)
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for _ in range(100):
            producer.produce(a.topic, value=f"r-{sent}".encode(), partition=0,
                             on_delivery=lambda err, msg, i=sent: report(i, err, msg))
            sent += 1
        producer.poll(0)
        time.sleep(0.01)
    left = producer.flush(WAIT_MAX_S)
    check(left == 0, f"{left} records still without a delivery report after {WAIT_MAX_S} s")
    check(len(acked) > 0, "no record was acknowledged")
    ok(f"produced {sent} records with acks=all across the leader's death: {len(acked)} acknowledged, "
       f"{len(failed)} reported failed{': ' + failed[0][1] if failed else ''}")

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "auto.offset.reset": "error"})
    consumer.assign([TopicPartition(a.topic, 0, 0)])
    found = {}
    deadline = time.monotonic() + WAIT_MAX_S
    _, high = consumer.get_watermark_offsets(TopicPartition(a.topic, 0), timeout=30)
    position = 0
    while position < high and time.monotonic() < deadline:
        for m in consumer.consume(10_000, timeout=1.0):
            if m.error():
                fail(f"consume: {m.error()}")
            found.setdefault(m.value().decode(), set()).add(m.offset())
            position = m.offset() + 1
    consumer.close()
    check(position >= high, f"consumed up to {position}, the high watermark is {high}")
    # A retried batch whose first attempt was appended after all is there twice (acks=all
    # without idempotence is at least once): the acknowledged copy must be among them.
    lost = [(i, o) for i, o in acked.items() if o not in found.get(f"r-{i}", ())]
    check(not lost, f"{len(lost)} acknowledged records are not at their reported offsets, e.g. {lost[:5]}")
    twice = sum(1 for offsets in found.values() if len(offsets) > 1)
    ok(f"every one of the {len(acked)} acknowledged records was consumed at its reported offset "
       f"({high} records in the partition, {twice} written twice by retries)")


if __name__ == "__main__":
    main()
