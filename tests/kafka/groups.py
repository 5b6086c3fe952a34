"""confluent-kafka (librdkafka) consumer groups: subscribe(), rebalances, committed offsets.

On a fresh 6-partition topic (3 replicas):
1. two consumers of one group subscribe: the six partitions are split between them
   (each assigned to exactly one); they read every record produced, none twice, and
   commit synchronously what they read;
2. one closes (LeaveGroup): the other is given all six and reads what follows;
3. it closes after a clean commit; records produced meanwhile are read by a new member of
   the group, which starts at the committed offsets: no record read twice, none skipped.
With --failover it prints `coordinator N` (the node coordinating the group) and waits for
a line on standard input (whoever runs it kills node N meanwhile) before step 3, then
checks that the committed offsets survived the coordinator's move.

    target/kafka-venv/main/bin/python tests/kafka/groups.py BOOTSTRAP [--failover]
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, fail, ok

PARTITIONS = 6
WAIT_MAX_S = 120


def produce(bootstrap, topic, first, count):
    """Produces records first..first+count (value = their number), round robin over the
    partitions; answers {i: (partition, offset)}."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "message.timeout.ms": WAIT_MAX_S * 1000})
    delivered, errors = {}, []

    def report(err, msg):
        if err is None:
            delivered[int(msg.value())] = (msg.partition(), msg.offset())
        else:
            errors.append(str(err))

    for i in range(first, first + count):
        producer.produce(topic, str(i).encode(), partition=i % PARTITIONS, on_delivery=report)
        producer.poll(0)
    left = producer.flush(WAIT_MAX_S)
    check(left == 0 and not errors, f"{left} undelivered, errors {errors[:1]}")
    return delivered


def consumer(bootstrap, group, name):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                     "enable.partition.eof": False})


def assigned(c):
    return {tp.partition for tp in c.assignment()}


def poll_until(consumers, done, what, seen):
    """Polls every consumer in turn until done(); each record read is noted in seen[i]
    (by consumer name) and committed synchronously right after."""
    deadline = time.monotonic() + WAIT_MAX_S
    while not done():
        if time.monotonic() > deadline:
            fail(f"{what}: not within {WAIT_MAX_S} s; assignments "
                 f"{ {n: sorted(assigned(c)) for n, c in consumers.items()} }, read {len(seen)}")
        for name, c in consumers.items():
            msgs = c.consume(num_messages=500, timeout=0.2)
            for msg in msgs:
                if msg.error():
                    fail(f"{name}: consume: {msg.error()}")
                i = int(msg.value())
                check(i not in seen, f"record {i} read twice: by {seen.get(i)} and by {name}")
                seen[i] = name
            if msgs:
                c.commit(asynchronous=False)


def committed(c, topic):
    tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    return {tp.partition: tp.offset for tp in tps}


def coordinator_of(bootstrap, group):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            description = admin.describe_consumer_groups([group])[group].result(timeout=10)
            return description.coordinator.id
        except KafkaException as e:
            last = e
            time.sleep(0.2)
    fail(f"describe_consumer_groups({group}): {last}")


def main():
    failover = "--failover" in sys.argv
    if failover:
        sys.argv.remove("--failover")
    a = args(__doc__, topics=("topic", "group"))
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    try:
        admin.create_topics([NewTopic(a.topic, num_partitions=PARTITIONS, replication_factor=3)])[a.topic].result(
            timeout=60)
    except KafkaException as e:
        fail(f"create topic {a.topic}: {e}")

    # 1. Two members split the partitions and read each record once.
    delivered = produce(a.bootstrap, a.topic, 0, 600)
    one, two = consumer(a.bootstrap, a.group, "one"), consumer(a.bootstrap, a.group, "two")
    one.subscribe([a.topic])
    two.subscribe([a.topic])
    members = {"one": one, "two": two}
    seen = {}

    def split():
        x, y = assigned(one), assigned(two)
        return x and y and not (x & y) and x | y == set(range(PARTITIONS))

    poll_until(members, lambda: split() and len(seen) == len(delivered), "two members read 600 records", seen)
    ok(f"two members split the {PARTITIONS} partitions ({sorted(assigned(one))} / {sorted(assigned(two))}) "
       f"and read all 600 records once, committing as they went")
    check(set(seen.values()) == {"one", "two"}, "both members read records")

    # 2. One leaves: the other gets every partition and reads what follows.
    one.close()
    more = produce(a.bootstrap, a.topic, 600, 300)
    poll_until({"two": two}, lambda: assigned(two) == set(range(PARTITIONS)) and len(seen) == 900,
               "the remaining member takes every partition and reads 300 more", seen)
    ok("after one member left, the other was given all six partitions and read the 300 new records once")
    before = committed(two, a.topic)
    ends = {p: 1 + max(off for q, off in list(delivered.values()) + list(more.values()) if q == p)
            for p in range(PARTITIONS)}
    check(before == ends, f"committed {before}, expected the ends {ends}")
    two.close()
    ok(f"committed offsets are the partitions' ends: {before}")

    if failover:
        node = coordinator_of(a.bootstrap, a.group)
        print(f"coordinator {node}", flush=True)
        line = sys.stdin.readline()
        check(line.strip() == "killed", f"expected `killed` on standard input, got {line!r}")

    # 3. A new member resumes at the committed offsets.
    produce(a.bootstrap, a.topic, 900, 300)
    three = consumer(a.bootstrap, a.group, "three")
    three.subscribe([a.topic])
    resumed = {}
    poll_until({"three": three}, lambda: len(resumed) >= 300, "a new member reads the 300 records after the commit",
               resumed)
    check(set(resumed) == set(range(900, 1200)), f"read {sorted(set(resumed) - set(range(900, 1200)))[:5]} "
          f"besides the new records, or missed {sorted(set(range(900, 1200)) - set(resumed))[:5]}")
    after = committed(three, a.topic)
    check(all(after[p] >= before[p] for p in range(PARTITIONS)), f"a committed offset went back: {before} -> {after}")
    three.close()
    ok("a new member resumed at the committed offsets: each of the 300 new records read once, none before them"
       + (", after the coordinator's node was killed" if failover else ""))


if __name__ == "__main__":
    main()
