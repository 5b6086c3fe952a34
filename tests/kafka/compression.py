"""Each compression codec (gzip, snappy, lz4, zstd) through a keel Kafka listener: batches
produced compressed by one client are stored as they came and read back by another.

librdkafka (confluent-kafka) produces and kafka-python reads, then kafka-python produces and
librdkafka reads, for every codec; every record must come back identical.

    target/kafka-venv/main/bin/python tests/kafka/compression.py BOOTSTRAP [--topic PREFIX]
"""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

from common import args, check, fail, ok

CODECS = ["gzip", "snappy", "lz4", "zstd"]
COUNT = 500
WAIT_MAX_S = 60


def records(codec):
    # Repetitive values, so that every codec really compresses them.
    return [(f"k{i}".encode(), f"{codec} record {i} ".encode() * 20) for i in range(COUNT)]


def produce_librdkafka(bootstrap, topic, codec):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": codec,
                         "linger.ms": 20, "enable.idempotence": False})
    errors = []
    for key, value in records(codec):
        producer.produce(topic, key=key, value=value, partition=0,
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    check(producer.flush(WAIT_MAX_S) == 0, f"{codec}: librdkafka could not deliver every record")
    check(not errors, f"{codec}: librdkafka delivery failed: {errors[:1]}")


def produce_kafka_python(bootstrap, topic, codec):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec, linger_ms=20)
    futures = [producer.send(topic, key=key, value=value, partition=0) for key, value in records(codec)]
    for f in futures:
        f.get(timeout=WAIT_MAX_S)
    producer.close()


def read_librdkafka(bootstrap, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + WAIT_MAX_S
    while len(got) < COUNT and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=1.0):
            if msg.error():
                fail(f"{topic}: librdkafka consume: {msg.error()}")
            got.append((msg.key(), msg.value()))
    consumer.close()
    return got


def read_kafka_python(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    consumer.assign([KpTopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    got = []
    deadline = time.monotonic() + WAIT_MAX_S
    while len(got) < COUNT and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=1000).values():
            got.extend((r.key, r.value) for r in batch)
    consumer.close()
    return got


def main():
    a = args(__doc__)
    pairs = [("librdkafka", produce_librdkafka, "kafka-python", read_kafka_python),
             ("kafka-python", produce_kafka_python, "librdkafka", read_librdkafka)]
    for codec in CODECS:
        for writer, produce, reader, read in pairs:
            topic = f"{a.topic}-{codec}-{writer}"
            produce(a.bootstrap, topic, codec)
            got = read(a.bootstrap, topic)
            check(got == records(codec), f"{codec}: {reader} read {len(got)} records, not the {COUNT} {writer} wrote")
            ok(f"{codec}: written by {writer}, read back identical by {reader}")


if __name__ == "__main__":
    main()
