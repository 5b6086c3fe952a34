"""Bad group requests on a keel Kafka listener, over raw sockets: each is answered with
Kafka's error code, the group's committed offset is untouched, and the node goes on serving.

Cases: SyncGroup from a member the group does not know (UNKNOWN_MEMBER_ID, 25) and with a
stale generation (ILLEGAL_GENERATION, 22); OffsetCommit from a non-member (25) and from a
stale generation (22); a JoinGroup whose group id has 10 000 bytes (INVALID_GROUP_ID, 24).

    target/kafka-venv/main/bin/python tests/kafka/group_bad_input.py BOOTSTRAP [--topic T]
"""

import struct
import time

from confluent_kafka.admin import AdminClient, NewTopic

from bad_input import api_versions_ok, connect, read_frame, request
from common import args, check, ok

OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP, SYNC_GROUP = 8, 9, 10, 11, 14


def string(s):
    data = s.encode()
    return struct.pack(">h", len(data)) + data


def data_bytes(b):
    return struct.pack(">i", len(b)) + b


class Reader:
    def __init__(self, frame):
        self.data, self.at = frame, 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self):
        n = self.take(">h")
        s = self.data[self.at:self.at + max(n, 0)].decode()
        self.at += max(n, 0)
        return s

    def bytes(self):
        n = self.take(">i")
        b = self.data[self.at:self.at + max(n, 0)]
        self.at += max(n, 0)
        return b


# NOT_COORDINATOR (16), COORDINATOR_NOT_AVAILABLE (15), COORDINATOR_LOAD_IN_PROGRESS (14): the
# group's coordinator moved (leadership of its __consumer_offsets partition is balanced back
# to its preferred replica on a new cluster). A client finds the coordinator again and retries.
COORDINATOR_MOVED = (14, 15, 16)


class CoordinatorMoved(Exception):
    pass


def settled(code, what):
    if code in COORDINATOR_MOVED:
        raise CoordinatorMoved(f"{what}: error {code}")
    return code


class Conn:
    def __init__(self, address):
        self.sock = connect(address)
        self.correlation = 0

    def call(self, api, version, body):
        self.correlation += 1
        self.sock.sendall(request(api, version, self.correlation, body))
        frame = read_frame(self.sock)
        check(frame is not None, f"api {api} v{version}: the connection closed instead of an answer")
        r = Reader(frame)
        check(r.take(">i") == self.correlation, f"api {api}: wrong correlation id")
        return r


def subscription(topic):
    return struct.pack(">h", 0) + struct.pack(">i", 1) + string(topic) + struct.pack(">i", -1)


def assignment(topic, partitions):
    body = struct.pack(">h", 0) + struct.pack(">i", 1) + string(topic) + struct.pack(">i", len(partitions))
    return body + b"".join(struct.pack(">i", p) for p in partitions) + struct.pack(">i", -1)


def sync(conn, group, generation, member, assignments=()):
    body = string(group) + struct.pack(">i", generation) + string(member) + struct.pack(">i", len(assignments))
    body += b"".join(string(m) + data_bytes(a) for m, a in assignments)
    return settled(conn.call(SYNC_GROUP, 0, body).take(">h"), "SyncGroup")


def commit(conn, group, generation, member, topic, offset):
    body = string(group) + struct.pack(">i", generation) + string(member) + struct.pack(">q", -1)
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1) + struct.pack(">iq", 0, offset) + string("")
    r = conn.call(OFFSET_COMMIT, 2, body)
    check(r.take(">i") == 1, "OffsetCommit: one topic answered")
    r.string()
    check(r.take(">i") == 1, "OffsetCommit: one partition answered")
    r.take(">i")
    return settled(r.take(">h"), "OffsetCommit")


def fetched(conn, group, topic):
    body = string(group) + struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1) + struct.pack(">i", 0)
    r = conn.call(OFFSET_FETCH, 1, body)
    r.take(">i")
    r.string()
    r.take(">i")
    _, offset = r.take(">iq")
    r.string()
    check(settled(r.take(">h"), "OffsetFetch") == 0, "OffsetFetch: an error")
    return offset


def main():
    a = args(__doc__)
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, 1, 1)])[a.topic].result(30)
    anywhere = Conn(a.bootstrap)
    for attempt in range(5):
        try:
            return checks(a, anywhere, f"bad-{a.topic}-{attempt}")
        except CoordinatorMoved as moved:
            print(f"the coordinator moved ({moved}); finding it again, with a new group")
            time.sleep(1)
    check(False, "the group's coordinator moved five times in a row")


def checks(a, anywhere, group):
    for _ in range(100):
        r = anywhere.call(FIND_COORDINATOR, 0, string(group))
        error, _node, host, port = r.take(">h"), r.take(">i"), r.string(), r.take(">i")
        if error == 0:
            break
        time.sleep(0.1)  # the coordinator may not be elected yet on a new cluster
    check(error == 0, f"FindCoordinator: error {error}")
    conn = Conn(f"{host}:{port}")

    body = string(group) + struct.pack(">i", 10_000) + string("") + string("consumer")
    body += struct.pack(">i", 1) + string("range") + data_bytes(subscription(a.topic))
    r = conn.call(JOIN_GROUP, 0, body)
    error, generation, _protocol, _leader, member = r.take(">h"), r.take(">i"), r.string(), r.string(), r.string()
    check(settled(error, "JoinGroup") == 0, f"JoinGroup: error {error}")

    code = sync(conn, group, generation, "nobody-1")
    check(code == 25, f"SyncGroup from an unknown member: {code}, not UNKNOWN_MEMBER_ID (25)")
    ok("SyncGroup from an unknown member: UNKNOWN_MEMBER_ID (25)")
    code = sync(conn, group, generation + 1, member)
    check(code == 22, f"SyncGroup with a stale generation: {code}, not ILLEGAL_GENERATION (22)")
    ok("SyncGroup with another generation: ILLEGAL_GENERATION (22)")
    code = sync(conn, group, generation, member, [(member, assignment(a.topic, [0]))])
    check(code == 0, f"the member's own SyncGroup after the bad ones: {code}")

    check(commit(conn, group, generation, member, a.topic, 7) == 0, "the member's commit")
    code = commit(conn, group, generation, "nobody-2", a.topic, 3)
    check(code == 25, f"OffsetCommit from a non-member: {code}, not UNKNOWN_MEMBER_ID (25)")
    ok("OffsetCommit from a non-member: UNKNOWN_MEMBER_ID (25)")
    code = commit(conn, group, generation - 1, member, a.topic, 3)
    check(code == 22, f"OffsetCommit from a stale generation: {code}, not ILLEGAL_GENERATION (22)")
    ok("OffsetCommit from a stale generation: ILLEGAL_GENERATION (22)")
    check(fetched(conn, group, a.topic) == 7, "the refused commits changed the committed offset")
    ok("the committed offset is still the member's (7)")

    body = string("g" * 10_000) + struct.pack(">i", 10_000) + string("") + string("consumer")
    body += struct.pack(">i", 1) + string("range") + data_bytes(subscription(a.topic))
    code = anywhere.call(JOIN_GROUP, 0, body).take(">h")
    check(code == 24, f"JoinGroup with a 10 000-byte group id: {code}, not INVALID_GROUP_ID (24)")
    ok("JoinGroup with a 10 000-byte group id: INVALID_GROUP_ID (24)")

    api_versions_ok(a.bootstrap)
    ok("the node still serves")


if __name__ == "__main__":
    main()
