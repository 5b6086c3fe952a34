"""kafka-python (2.2.x or 3.x) against a keel Kafka listener: produce with acks=all and
consume back by assign(), keys, values, headers, timestamps and offsets identical.

kafka-python 3 makes producers idempotent by default; this turns idempotence off, as it
did before keel answered InitProducerId (idempotence is checked with confluent-kafka in
idempotent.py; kafka-python's was not checked yet).

    target/kafka-venv/main/bin/python tests/kafka/kafka_python.py BOOTSTRAP   # 2.2.x
    target/kafka-venv/kp3/bin/python tests/kafka/kafka_python.py BOOTSTRAP    # 3.x
"""

import time

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from common import args, check, check_consumed, key, ok, value

COUNT = 2000
WAIT_MAX_S = 60


def main():
    a = args(__doc__)
    major = int(kafka.__version__.split(".")[0])
    options = {"bootstrap_servers": a.bootstrap, "acks": "all", "linger_ms": 5}
    if major >= 3:
        options["enable_idempotence"] = False
    producer = KafkaProducer(**options)
    t0 = int(time.time() * 1000) - COUNT
    futures = [
        producer.send(a.topic, key=key(i), value=value(i),
                      headers=[("idx", str(i).encode())], timestamp_ms=t0 + i)
        for i in range(COUNT)
    ]
    producer.flush(WAIT_MAX_S)
    delivered = {}
    for i, future in enumerate(futures):
        meta = future.get(timeout=WAIT_MAX_S)
        delivered[i] = (meta.partition, meta.offset)
    producer.close()
    ok(f"kafka-python {kafka.__version__}: produced {COUNT} records with acks=all")

    consumer = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    partitions = sorted(consumer.partitions_for_topic(a.topic) or [])
    check(partitions, f"no partitions for {a.topic}")
    consumer.assign([TopicPartition(a.topic, p) for p in partitions])
    consumer.seek_to_beginning()
    seen = set()
    deadline = time.monotonic() + WAIT_MAX_S
    while len(seen) < COUNT and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=1000).items():
            for r in records:
                check_consumed(r, seen, t0, delivered)
    check(len(seen) == COUNT, f"consumed {len(seen)} of {COUNT} in {WAIT_MAX_S} s")
    consumer.close()
    ok(f"kafka-python {kafka.__version__}: consumed all {COUNT} back by assign(), identical")


if __name__ == "__main__":
    main()
