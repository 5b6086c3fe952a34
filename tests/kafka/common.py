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
