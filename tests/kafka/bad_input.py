"""Bad input on a keel Kafka listener, over raw sockets: each case is answered with the
right error code or the connection is closed, and a new connection is served afterwards.

Cases: a 2 GiB length, a truncated frame, an unknown api key, an api version keel does not
advertise, a forged array count, garbage, and a RecordBatch whose CRC is wrong (answered
with CORRUPT_MESSAGE, 2, on a topic that exists: it is created first).

    target/kafka-venv/main/bin/python tests/kafka/bad_input.py BOOTSTRAP [--topic T]
"""

import socket
import struct
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, fail, ok

TIMEOUT_S = 10
API_VERSIONS, PRODUCE, METADATA = 18, 0, 3


def connect(bootstrap):
    host, port = bootstrap.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT_S)


def request(api_key, version, correlation_id, body=b""):
    """A request frame with header v1 (client id "bad-input")."""
    client_id = b"bad-input"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(header) + len(body)) + header + body


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(sock):
    """The next response frame, or None once the server closed the connection."""
    try:
        size = read_exact(sock, 4)
        return None if size is None else read_exact(sock, struct.unpack(">i", size)[0])
    except ConnectionResetError:
        return None


def api_versions_ok(bootstrap):
    """A fresh connection is answered: ApiVersions v0 with error 0."""
    with connect(bootstrap) as sock:
        sock.sendall(request(API_VERSIONS, 0, 99))
        frame = read_frame(sock)
    check(frame is not None, "a new connection after bad input is not answered")
    correlation_id, error = struct.unpack(">ih", frame[:6])
    check((correlation_id, error) == (99, 0), f"ApiVersions after bad input: {(correlation_id, error)}")


def closed_after(bootstrap, what, payload, shutdown=False):
    with connect(bootstrap) as sock:
        sock.sendall(payload)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        try:
            frame = read_frame(sock)
        except socket.timeout:
            fail(f"{what}: neither answered nor closed within {TIMEOUT_S} s")
    if frame is not None:
        fail(f"{what}: answered ({len(frame)} bytes) instead of closed")
    api_versions_ok(bootstrap)
    ok(f"{what}: connection closed, the next one served")


def crc32c(data):
    """CRC-32C (Castagnoli), bit by bit: slow, and only used on a tiny batch."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def batch(good_crc):
    """One RecordBatch v2 of one record; its CRC right, or off by one."""
    # attributes 0, timestampDelta 0, offsetDelta 0, key null (-1 zigzag = 1), value "v"
    # (length 1 zigzag = 2), no headers; every varint here fits in one byte.
    record_body = bytes([0, 0, 0, 1, 2]) + b"v" + bytes([0])
    record = bytes([len(record_body) * 2]) + record_body  # zigzag varint length (small)
    after_crc = struct.pack(">hiqqqhii", 0, 0, 0, 0, -1, -1, -1, 1) + record
    crc = crc32c(after_crc) if good_crc else (crc32c(after_crc) + 1) & 0xFFFFFFFF
    after_length = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v3(topic, records):
    name = topic.encode()
    body = struct.pack(">hhi", -1, -1, 5000)  # null transactional id, acks=all, timeout
    body += struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">ii", 1, 0) + struct.pack(">i", len(records)) + records
    return request(PRODUCE, 3, 7, body)


def produce_error(bootstrap, topic, records):
    """The error code a Produce v3 of `records` to partition 0 is answered with."""
    with connect(bootstrap) as sock:
        sock.sendall(produce_v3(topic, records))
        frame = read_frame(sock)
    check(frame is not None, "a produce was not answered")
    # correlation id, topics count, name, partitions count, index, error code
    (correlation_id, _topics, name_len) = struct.unpack(">iih", frame[:10])
    _partitions, index, error = struct.unpack(">iih", frame[10 + name_len:20 + name_len])
    check((correlation_id, index) == (7, 0), f"produce answer for {(correlation_id, index)}")
    return error


def partition_leader(admin, topic):
    """host:port of the leader of `topic`'s partition 0, once there is one (at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=10)
        partition = metadata.topics[topic].partitions.get(0)
        if partition is not None and partition.leader in metadata.brokers:
            broker = metadata.brokers[partition.leader]
            return f"{broker.host}:{broker.port}"
        time.sleep(0.1)
    fail(f"{topic} has no leader after 30 s")


def main():
    a = args(__doc__)
    b = a.bootstrap
    closed_after(b, "a 2 GiB length", struct.pack(">i", 2**31 - 1))
    closed_after(b, "a negative length", struct.pack(">i", -5))
    closed_after(b, "a truncated frame", struct.pack(">i", 100) + b"\x00\x12\x00\x00", shutdown=True)
    closed_after(b, "an unknown api key (999)", request(999, 0, 1))
    closed_after(b, "an unadvertised version (Produce v8)", request(PRODUCE, 8, 1, b"\x00" * 20))
    closed_after(b, "a forged array count (Metadata v1, 2^31-1 topics)", request(METADATA, 1, 1, struct.pack(">i", 2**31 - 1) + b"xx"))
    closed_after(b, "garbage", b"\x00\x00\x00\x20" + b"\xfe" * 32)

    admin = AdminClient({"bootstrap.servers": b})
    try:
        admin.create_topics([NewTopic(a.topic, num_partitions=1)])[a.topic].result(timeout=30)
    except KafkaException as e:
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            fail(f"create {a.topic}: {e}")
    # A produce goes to the partition's leader, which may be another broker of the cluster.
    leader = partition_leader(admin, a.topic)
    # The same batch is accepted with its right CRC, so the bad one is refused for its CRC.
    error = produce_error(leader, a.topic, batch(good_crc=True))
    check(error == 0, f"a batch with a right CRC is refused with error {error}")
    error = produce_error(leader, a.topic, batch(good_crc=False))
    check(error == 2, f"a bad CRC: answered error {error}, expected CORRUPT_MESSAGE (2)")
    api_versions_ok(b)
    ok("a RecordBatch with a bad CRC: CORRUPT_MESSAGE (2), the next connection served")


if __name__ == "__main__":
    main()
