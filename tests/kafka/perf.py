"""Throughput of confluent-kafka (librdkafka) against a keel Kafka listener: a figure for
the closing notes and README, not a check (it fails only when records go missing).

Produces --count records of 1 KiB with acks=all and linger.ms=5 to a topic of --partitions
partitions, then consumes them back by assign() from offset 0, and prints one JSON line:
records/s and MB/s (10^6 bytes) each way.

    target/kafka-venv/main/bin/python tests/kafka/perf.py BOOTSTRAP [--topic T]
"""

import json
import os
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, fail

COUNT = int(os.environ.get("PERF_COUNT", "200000"))
PARTITIONS = int(os.environ.get("PERF_PARTITIONS", "3"))
SIZE = 1024


def main():
    a = args(__doc__)
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    try:
        admin.create_topics([NewTopic(a.topic, num_partitions=PARTITIONS)])[a.topic].result(timeout=60)
    except KafkaException as e:
        fail(f"create topic {a.topic}: {e}")
    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False, "queue.buffering.max.messages": 1_000_000,
                         "batch.size": 1 << 20})
    value = os.urandom(SIZE)
    errors = []

    def report(err, _msg):
        if err is not None:
            errors.append(str(err))

    start = time.monotonic()
    for i in range(COUNT):
        while True:
            try:
                producer.produce(a.topic, value=value, partition=i % PARTITIONS, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    check(producer.flush(120) == 0, "records left without a delivery report")
    produce_s = time.monotonic() - start
    check(not errors, f"{len(errors)} delivery errors, e.g. {errors[:3]}")

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20})
    consumer.assign([TopicPartition(a.topic, p, 0) for p in range(PARTITIONS)])
    got = 0
    start = time.monotonic()
    deadline = start + 120
    while got < COUNT and time.monotonic() < deadline:
        for m in consumer.consume(10_000, timeout=1.0):
            if m.error():
                fail(f"consume: {m.error()}")
            got += 1
    consume_s = time.monotonic() - start
    consumer.close()
    check(got == COUNT, f"consumed {got} of {COUNT}")
    mb = COUNT * SIZE / 1e6
    print(json.dumps({
        "records": COUNT, "record_bytes": SIZE, "partitions": PARTITIONS,
        "produce_records_per_s": round(COUNT / produce_s), "produce_mb_per_s": round(mb / produce_s, 1),
        "consume_records_per_s": round(COUNT / consume_s), "consume_mb_per_s": round(mb / consume_s, 1),
    }))


if __name__ == "__main__":
    main()
