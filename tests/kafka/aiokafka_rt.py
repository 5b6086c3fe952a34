"""aiokafka (0.12 pins old request versions; 0.13+ negotiates) against a keel Kafka
listener: produce with acks=all, consume back by assign(), identical.

    target/kafka-venv/main/bin/python tests/kafka/aiokafka_rt.py BOOTSTRAP         # 0.12
    target/kafka-venv/aiokafka14/bin/python tests/kafka/aiokafka_rt.py BOOTSTRAP   # 0.14
"""

import asyncio
import time

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from common import args, check, check_consumed, key, ok, value

COUNT = 2000
WAIT_MAX_S = 60


async def main():
    a = args(__doc__)
    producer = AIOKafkaProducer(bootstrap_servers=a.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    t0 = int(time.time() * 1000) - COUNT
    try:
        futures = [
            await producer.send(a.topic, key=key(i), value=value(i),
                                headers=[("idx", str(i).encode())], timestamp_ms=t0 + i)
            for i in range(COUNT)
        ]
        metas = await asyncio.wait_for(asyncio.gather(*futures), WAIT_MAX_S)
    finally:
        await producer.stop()
    delivered = {i: (m.partition, m.offset) for i, m in enumerate(metas)}
    ok(f"aiokafka {aiokafka.__version__}: produced {COUNT} records with acks=all")

    consumer = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        # The partitions the records went to (aiokafka 0.14's consumer only learns a
        # topic's partitions once it subscribes, which needs a consumer group).
        partitions = sorted({p for p, _ in delivered.values()})
        consumer.assign([TopicPartition(a.topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        seen = set()
        deadline = time.monotonic() + WAIT_MAX_S
        while len(seen) < COUNT and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    check_consumed(r, seen, t0, delivered)
        check(len(seen) == COUNT, f"consumed {len(seen)} of {COUNT} in {WAIT_MAX_S} s")
    finally:
        await consumer.stop()
    ok(f"aiokafka {aiokafka.__version__}: consumed all {COUNT} back by assign(), identical")


if __name__ == "__main__":
    asyncio.run(main())
