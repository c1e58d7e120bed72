#!/usr/bin/env python3
"""Writes the seed inputs under fuzz/seeds/ from the Nameko wire captures in
crates/shimeji/tests/vectors (requests, replies and events as Nameko sent
them) and a few hand-written request bodies. Run it again when the vectors
change; the seeds are committed."""

import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
VECTORS = HERE.parent / "crates" / "shimeji" / "tests" / "vectors"
SEEDS = HERE / "seeds"


def write(target, name, data):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def amqp_seeds():
    for path in sorted(VECTORS.glob("*.json")):
        doc = json.loads(path.read_text())
        for i, m in enumerate(doc.get("messages", [])):
            if m.get("method") != "basic.publish":
                continue
            frame = bytes.fromhex(m["header_frame_hex"])
            # Header frame: type(1) channel(2) size(4) class(2) weight(2)
            # body size(8), the properties, the frame end octet.
            props = frame[19:-1]
            key = m["args"]["routing_key"].encode()[:255]
            body = m["body"].encode()
            data = struct.pack("<I", len(props)) + props + bytes([len(key)]) + key + body
            write("amqp_request", f"{path.stem}-{i}", data)


BODIES = [
    b'{"args": [1, 2], "kwargs": {}}',
    b'{"args": [], "kwargs": {"a": 1, "b": 2}}',
    b'{"args": [1], "kwargs": {"b": 2}}',
    b'{"args": ["Ada"], "kwargs": {"punct": "!"}}',
    b'{"args": [[{"name": "x", "qty": 2, "tags": ["t"]}]], "kwargs": {"c": 1.5}}',
    b'{"args": [1, 2, 3, 4], "kwargs": {}}',
    b'{"args": [1], "kwargs": {"a": 2}}',
    b'{"args": [], "kwargs": {"zz": 1}}',
    b'{"args": {}, "kwargs": []}',
    b'[1, 2]',
    b'{"args": [null, 9223372036854775807], "kwargs": {}}',
]


def binding_seeds():
    for i, body in enumerate(BODIES):
        write("binding", f"body-{i}", body)


if __name__ == "__main__":
    amqp_seeds()
    binding_seeds()


def nested_headers(depth):
    """Content-header properties with only `headers` set: a field table
    nesting another `depth` levels deep ({"a": {"a": ...}})."""
    table = struct.pack(">I", 0)
    for _ in range(depth):
        entry = bytes([1]) + b"a" + b"F" + table
        table = struct.pack(">I", len(entry)) + entry
    return struct.pack(">H", 0x2000) + table


def amqp_frame(props, key, body):
    return struct.pack("<I", len(props)) + props + bytes([len(key)]) + key + body


if __name__ == "__main__":
    # Regressions: the AMQP client's field-table decoder recursing once per
    # nesting level (a stack overflow aborts the process).
    folder = HERE / "regressions" / "amqp_request"
    folder.mkdir(parents=True, exist_ok=True)
    for depth in (5000, 18000):
        data = amqp_frame(nested_headers(depth), b"svc.method", b'{"args": [], "kwargs": {}}')
        (folder / f"deep-nested-headers-{depth}").write_bytes(data)
    # A shallow one as a seed, so the fuzzer starts from nesting.
    write("amqp_request", "nested-headers-64",
          amqp_frame(nested_headers(64), b"svc.method", b'{"args": [], "kwargs": {}}'))
