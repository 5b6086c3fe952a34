"""confluent-kafka (librdkafka) against a keel Kafka listener.

Creates an 8-partition topic, produces 100 000 records with keys, headers and timestamps
with acks=all (every delivery report must be ok), consumes them back by assign() from
offset 0 (values, keys, headers, timestamps, partitions and offsets identical), and checks
get_watermark_offsets and offsets_for_times against what the delivery reports said.

    target/kafka-venv/main/bin/python tests/kafka/confluent.py BOOTSTRAP [--topic T] [--count N]
"""

import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, fail, ok

PARTITIONS = 8
WAIT_MAX_S = 120


def main():
    a = args(__doc__)
    count = 100_000
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    futures = admin.create_topics([NewTopic(a.topic, num_partitions=PARTITIONS)], operation_timeout=30)
    try:
        futures[a.topic].result(timeout=60)
    except KafkaException as e:
        fail(f"create topic {a.topic}: {e}")
    ok(f"created {a.topic} with {PARTITIONS} partitions")

    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False})
    t0 = int(time.time() * 1000) - count
    delivered = {}
    errors = []

    def report(i, err, msg):
        # A delivery report's message carries no headers: the index comes bound.
        if err is not None:
            errors.append(str(err))
        else:
            delivered[i] = (msg.partition(), msg.offset())

    for i in range(count):
        while True:
            try:
                producer.produce(a.topic, key=f"key-{i % 997}", value=f"value-{i}".encode(), timestamp=t0 + i,
                                 headers=[("idx", str(i).encode()), ("empty", b"")],
                                 on_delivery=lambda err, msg, i=i: report(i, err, msg))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(WAIT_MAX_S)
    check(left == 0, f"{left} records still undelivered after {WAIT_MAX_S} s")
    check(not errors, f"{len(errors)} delivery reports failed, first: {errors[:1]}")
    check(len(delivered) == count, f"{len(delivered)} delivery reports for {count} records")
    ok(f"produced {count} records with acks=all, every delivery report ok")

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{a.topic}-reader",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    consumer.assign([TopicPartition(a.topic, p, 0) for p in range(PARTITIONS)])
    seen = {}
    deadline = time.monotonic() + WAIT_MAX_S
    while len(seen) < count and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=10_000, timeout=1.0):
            if msg.error():
                fail(f"consume: {msg.error()}")
            headers = msg.headers()
            i = int(headers[0][1])
            expected = (f"key-{i % 997}".encode(), f"value-{i}".encode(), [("idx", str(i).encode()), ("empty", b"")],
                        t0 + i, delivered[i])
            got = (msg.key(), msg.value(), headers, msg.timestamp()[1], (msg.partition(), msg.offset()))
            check(got == expected, f"record {i}: got {got}, produced {expected}")
            check(i not in seen, f"record {i} consumed twice")
            seen[i] = True
    check(len(seen) == count, f"consumed {len(seen)} of {count} records in {WAIT_MAX_S} s")
    ok(f"consumed all {count} by assign() from offset 0: keys, values, headers, timestamps, offsets identical")

    by_partition = {p: sorted((off, i) for i, (q, off) in delivered.items() if q == p) for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(a.topic, p), timeout=10)
        offsets = by_partition[p]
        check((low, high) == (0, len(offsets)), f"partition {p}: watermarks {(low, high)}, expected (0, {len(offsets)})")
        check([off for off, _ in offsets] == list(range(len(offsets))), f"partition {p}: offsets not dense")
    ok("get_watermark_offsets agrees with the delivery reports")

    # offsets_for_times: the first record at or after each probed timestamp, per partition.
    probes = [0, 1, count // 3, count // 2, count - 1]
    for i in probes:
        asked = [TopicPartition(a.topic, p, t0 + i) for p in range(PARTITIONS)]
        for tp in consumer.offsets_for_times(asked, timeout=10):
            later = [off for off, j in by_partition[tp.partition] if j >= i]
            expected = later[0] if later else -1
            check(tp.offset == expected, f"offsets_for_times(p{tp.partition}, t0+{i}) = {tp.offset}, expected {expected}")
    future = [TopicPartition(a.topic, p, t0 + count + 60_000) for p in range(PARTITIONS)]
    for tp in consumer.offsets_for_times(future, timeout=10):
        check(tp.offset == -1, f"offsets_for_times after the last record: {tp.offset}, expected -1 (end)")
    ok("offsets_for_times agrees with the timestamps produced")
    consumer.close()


if __name__ == "__main__":
    main()
