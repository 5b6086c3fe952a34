"""Shared by the Kafka client checks: arguments, failing loudly, waiting with a bound."""

import argparse
import os
import sys
import time


def args(description, topics=("topic",)):
    """Parses BOOTSTRAP and one --NAME per topic the script uses (default: a fresh name)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("bootstrap", help="host:port of a keel node's Kafka listener")
    run = f"{int(time.time())}-{os.getpid()}"
    for name in topics:
        parser.add_argument(f"--{name}", default=f"{parser.prog.split('.')[0]}-{name}-{run}")
    return parser.parse_args()


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def ok(message):
    print(f"ok: {message}")


def key(i):
    return f"key-{i % 13}".encode()


def value(i):
    return f"value-{i}".encode()


def check_consumed(record, seen, t0, delivered):
    """Checks one record consumed by kafka-python or aiokafka (their records have the same
    fields) against record i as produced: key(i), value(i), timestamp t0 + i, a header idx=i,
    at the partition and offset its delivery reported."""
    i = int(dict(record.headers)["idx"])
    got = (record.key, record.value, record.timestamp, (record.partition, record.offset))
    expected = (key(i), value(i), t0 + i, delivered[i])
    check(got == expected, f"record {i}: got {got}, produced {expected}")
    check(i not in seen, f"record {i} consumed twice")
    seen.add(i)


def check_exactly_once(topic, partition, found, delivered, records, partitions):
    """Checks what partition `partition` of `topic` holds, `found` as (offset, value) from
    offset 0, against records r-0 .. r-(records-1) sent round-robin over `partitions`: each
    sent to it once, in order, at the offset its delivery reported (`delivered[i]` is
    (partition, offset))."""
    values = [v for _, v in found]
    sent = [f"r-{i}" for i in range(partition, records, partitions)]
    if values != sent:
        twice = len(values) - len(set(values))
        missing = len(set(sent) - set(values))
        fail(f"{topic}/{partition}: {len(values)} records, {twice} duplicated, {missing} missing, "
             f"in order: {sorted(values, key=lambda v: int(v[2:])) == values}; sent {len(sent)}")
    wrong = [(v, o) for o, v in found if delivered[int(v[2:])] != (partition, o)]
    check(not wrong, f"{topic}/{partition}: records at other offsets than reported, e.g. {wrong[:3]}")
    ok(f"{topic}/{partition}: all {len(sent)} records exactly once, in order, at their reported offsets")
