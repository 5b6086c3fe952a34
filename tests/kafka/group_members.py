"""Three confluent-kafka consumers of one group, each its own process, on a 6-partition topic.

1. The three members subscribe; once the group is stable every partition is assigned to
   exactly one member.
2. 60 000 records are produced while they consume (each member commits synchronously after
   each batch it prints).
3. One member is killed (SIGKILL: no LeaveGroup): the coordinator drops it when its session
   (6 s) runs out, and its partitions go to the two others within the session timeout and a
   few seconds; they resume each from the offset the group committed (never from the
   start of the partition, no record skipped).
4. Every record is consumed at least once, and any record consumed by two members is on a
   partition that changed owner (none by two members holding the partition at once).
5. Prints `group GROUP TOPIC p:offset ...`: the offsets the group committed, as
   confluent-kafka reads them back (the Rust test compares `keel group describe`).

    target/kafka-venv/main/bin/python tests/kafka/group_members.py BOOTSTRAP
    (a member:) ... group_members.py BOOTSTRAP --member NAME --topic T --group G
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, fail, ok

PARTITIONS = 6
RECORDS = 60_000
SESSION_MS = 6_000
# The session timeout, then a rebalance and the survivors' joins.
REASSIGN_MAX_S = SESSION_MS / 1000 + 8
WAIT_MAX_S = 90


def member(bootstrap, topic, group, name):
    """One member: prints `assign NAME p,p,...` on each assignment, `rec NAME p o` per
    record, and commits after each batch it printed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 500,
                  "partition.assignment.strategy": "range"})

    def on_assign(consumer, partitions):
        print(f"assign {name} {','.join(str(p.partition) for p in partitions)}", flush=True)

    def on_revoke(consumer, partitions):
        print(f"revoke {name}", flush=True)

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    parent = os.getppid()
    while os.getppid() == parent:  # a member whose driver is gone stops
        batch = c.consume(num_messages=2000, timeout=0.2)
        lines = []
        for m in batch:
            if m.error():
                continue
            lines.append(f"rec {name} {m.partition()} {m.offset()}")
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            try:
                done = c.commit(asynchronous=False)
                print(f"committed {name} " + ",".join(f"{tp.partition}:{tp.offset}" for tp in done if not tp.error),
                      flush=True)
            except Exception as e:  # a commit refused in a rebalance: those records come again
                print(f"commit-refused {name} {e}", flush=True)


def drive(bootstrap):
    procs = {}
    try:
        drive_members(bootstrap, procs)
    finally:  # a failed check does not leave the members running
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def drive_members(bootstrap, procs):
    run = f"{int(time.time())}-{os.getpid()}"
    topic, group = f"members-{run}", f"members-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)

    events = queue.Queue()
    for name in ("a", "b", "c"):
        p = subprocess.Popen([sys.executable, __file__, bootstrap, "--member", name, "--topic", topic,
                              "--group", group], stdout=subprocess.PIPE, text=True)
        procs[name] = p
        threading.Thread(target=lambda p=p: [events.put(line.split()) for line in p.stdout], daemon=True).start()

    owners = {}            # member -> its current partitions
    consumed = {}          # (partition, offset) -> set of members
    last_read = {}         # (member, partition) -> last offset it read
    first_after_kill = {}  # (member, partition) -> first offset it read after the kill
    ever_owned = {}        # partition -> members that held it
    commits = {}           # (member, partition) -> the last offset it committed
    killed = []

    def take(timeout):
        try:
            e = events.get(timeout=timeout)
        except queue.Empty:
            return None
        if e[0] == "assign":
            parts = {int(p) for p in e[2].split(",")} if len(e) > 2 else set()
            owners[e[1]] = parts
            for p in parts:
                ever_owned.setdefault(p, set()).add(e[1])
        elif e[0] == "revoke":
            owners[e[1]] = set()
        elif e[0] == "committed" and len(e) > 2:
            for pair in e[2].split(","):
                p, o = pair.split(":")
                commits[(e[1], int(p))] = int(o)
        elif e[0] == "rec":
            key = (int(e[2]), int(e[3]))
            consumed.setdefault(key, set()).add(e[1])
            last_read[(e[1], key[0])] = key[1]
            if killed:
                first_after_kill.setdefault((e[1], key[0]), key[1])
        return e

    def stable(members):
        held = [owners.get(m, set()) for m in members]
        union = set().union(*held)
        return union == set(range(PARTITIONS)) and sum(len(h) for h in held) == PARTITIONS

    deadline = time.time() + WAIT_MAX_S
    while not stable("abc"):
        check(time.time() < deadline, f"the three members never split the partitions: {owners}")
        take(0.5)
    ok(f"three members, every partition assigned once: {owners}")

    delivered = set()

    def report(err, msg):
        if err is None:
            delivered.add((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(RECORDS):
        while True:
            try:
                producer.produce(topic, str(i).encode(), partition=i % PARTITIONS, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
            while take(0) is not None:
                pass
    check(producer.flush(WAIT_MAX_S) == 0, "records left undelivered")
    check(len(delivered) == RECORDS, f"{len(delivered)} of {RECORDS} delivered")
    ok(f"{RECORDS} records produced while the members consume")

    # Kill a member once it has committed part of what it holds.
    victim = "c"
    while not any(o > 0 and p in owners[victim] for (m, p), o in commits.items() if m == victim):
        check(time.time() < deadline, "member c committed nothing")
        take(0.5)
    victim_parts = set(owners[victim])
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    killed_at = time.time()
    killed.append(victim)
    while not stable("ab"):
        check(time.time() - killed_at < REASSIGN_MAX_S,
              f"c's partitions {victim_parts} not reassigned {REASSIGN_MAX_S} s after the kill: {owners}")
        take(0.5)
    ok(f"after kill -9 of c, its partitions {sorted(victim_parts)} went to a and b in "
       f"{time.time() - killed_at:.1f} s: {owners}")

    deadline = time.time() + WAIT_MAX_S
    while True:
        # Every line queued so far first: comparing 60 000 records after each line would
        # make this loop, not the members, the bottleneck.
        while take(0) is not None:
            pass
        if delivered <= consumed.keys():
            break
        check(time.time() < deadline, f"{len(delivered - consumed.keys())} records never consumed")
        take(0.5)
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
            p.wait()
    while take(0.2) is not None:
        pass

    for p in victim_parts:
        takers = [m for m in "ab" if p in owners.get(m, set())]
        check(len(takers) == 1, f"partition {p} held by {takers} at the end")
        first = first_after_kill.get((takers[0], p))
        last, committed = last_read.get((victim, p)), commits.get((victim, p), 0)
        if first is None or last is None:
            continue
        # The new owner starts at the group's committed offset: at or past c's last commit,
        # and not past what c read.
        check(committed <= first <= last + 1,
              f"partition {p}: {takers[0]} began at {first}; c committed {committed} and read up to {last}")
    twice = {k: ms for k, ms in consumed.items() if len(ms) > 1}
    moved = {p for p, ms in ever_owned.items() if len(ms) > 1}
    check(all(p in moved for (p, _) in twice),
          f"records consumed by two members on a partition that never changed owner: {list(twice.items())[:5]}")
    ok(f"all {RECORDS} records consumed at least once; {len(twice)} read again after their partition "
       f"changed owner, none by two members of one generation")

    # What the group committed, as Kafka's client reads it back (for `keel group describe`).
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committed = reader.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    reader.close()
    print(f"group {group} {topic} " + " ".join(f"{tp.partition}:{tp.offset}" for tp in committed), flush=True)


def main():
    argv = sys.argv[1:]
    if "--member" in argv:
        opts = dict(zip(argv[1::2], argv[2::2]))
        member(argv[0], opts["--topic"], opts["--group"], opts["--member"])
    elif len(argv) == 1:
        drive(argv[0])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
