#!/usr/bin/env python3
"""Split recorded client streams (protocol header, then frames) into per-target seeds.

    split.py RECORDINGS_DIR SEEDS_DIR

Each seed is named by a hash of its content, so re-running adds nothing already there.
frames: each stream after its protocol header, in windows of whole frames; handshake: each whole stream; methods: each
method payload, first byte the method's index in warren::fuzzing's KNOWN_METHODS; publish:
basic.publish arguments; properties: content-header payloads; fields: every field table in
methods and headers properties; definitions: the broker's stored definitions files.
"""
import hashlib
import os
import struct
import sys

KNOWN = [(10, m) for m in (10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71)]
KNOWN += [(20, m) for m in (10, 11, 20, 21, 40, 41)] + [(30, 10), (30, 11)]
KNOWN += [(40, m) for m in (10, 11, 20, 21, 30, 31, 40, 51)]
KNOWN += [(50, m) for m in (10, 11, 20, 21, 30, 31, 40, 41, 50, 51)]
KNOWN += [(60, m) for m in (10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120)]
KNOWN += [(85, 10), (85, 11)] + [(90, m) for m in (10, 11, 20, 21, 30, 31)]

# What precedes the one field table of the methods that carry one: o = octet, s = short,
# S = short string (as warren::protocol::fields::method_table_offset reads them).
TABLE_AFTER = {
    (10, 10): "oo", (10, 11): "", (40, 10): "sSSo", (40, 30): "sSSSo", (40, 40): "sSSSo",
    (50, 10): "sSo", (50, 20): "sSSSo", (50, 50): "sSSS", (60, 20): "sSSo",
}

MAX_SEED = 4096  # bytes; a longer stream is cut at a frame boundary


def frames(stream):
    at = 0
    while at + 7 <= len(stream):
        ftype, channel, size = struct.unpack(">BHI", stream[at:at + 7])
        end = at + 7 + size + 1
        if end > len(stream):
            return
        yield at, end, ftype, channel, stream[at + 7:end - 1]
        at = end


def table_at(payload, at):
    if at + 4 > len(payload):
        return None
    (n,) = struct.unpack(">I", payload[at:at + 4])
    return payload[at:at + 4 + n] if at + 4 + n <= len(payload) else None


def method_table(payload):
    ids = struct.unpack(">HH", payload[:4])
    if ids not in TABLE_AFTER:
        return None
    at = 4
    for arg in TABLE_AFTER[ids]:
        if arg == "o":
            at += 1
        elif arg == "s":
            at += 2
        else:
            at += 1 + payload[at]
    return table_at(payload, at)


def header_table(payload):
    (flags,) = struct.unpack(">H", payload[12:14])
    if not flags & (1 << 13):
        return None
    at = 14
    for bit in (15, 14):
        if flags & (1 << bit):
            at += 1 + payload[at]
    return table_at(payload, at)


def cut(stream, limit):
    """The longest prefix of whole frames within limit bytes (the protocol header included)."""
    end = 8
    for _, fend, *_ in frames(stream[8:]):
        if 8 + fend > limit:
            break
        end = 8 + fend
    return stream[:end]


def main(rec_dir, seeds_dir):
    seeds = {}

    def add(target, data):
        if data is None or len(data) == 0 or len(data) > MAX_SEED:
            return
        name = hashlib.sha1(data).hexdigest()[:16]
        seeds.setdefault(target, {})[name] = data

    for name in sorted(os.listdir(rec_dir)):
        path = os.path.join(rec_dir, name)
        if not os.path.isfile(path):
            continue
        data = open(path, "rb").read()
        if name.startswith("definitions"):
            add("definitions", data)
            continue
        if not name.endswith(".bin") or not data.startswith(b"AMQP"):
            continue
        add("handshake", cut(data, MAX_SEED))
        # The frames after the header in windows of whole frames, each within MAX_SEED bytes.
        start, end = 0, 0
        for fstart, fend, *_ in frames(data[8:]):
            if fend - start > MAX_SEED and end > start:
                add("frames", data[8 + start:8 + end])
                start = fstart
            end = fend
        add("frames", data[8 + start:8 + end])
        for _, _, ftype, _, payload in frames(data[8:]):
            if ftype == 1 and len(payload) >= 4:
                ids = struct.unpack(">HH", payload[:4])
                if ids in KNOWN:
                    add("methods", bytes([KNOWN.index(ids)]) + payload[4:])
                if ids == (60, 40):
                    add("publish", payload[4:])
                add("fields", method_table(payload))
            elif ftype == 2 and len(payload) >= 14:
                add("properties", payload)
                add("fields", header_table(payload))
    for target, named in sorted(seeds.items()):
        d = os.path.join(seeds_dir, target)
        os.makedirs(d, exist_ok=True)
        for name, data in named.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(named)} seeds")


main(sys.argv[1], sys.argv[2])
