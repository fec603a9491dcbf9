#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/ (the config seeds are copies of the repo's own
YAML files plus a few small ones). Re-run after changing a target's input layout:
    python3 tests/fuzz/make_seeds.py
Reproducers of fixed bugs are added to the corpus by hand (named after the bug) and kept.
"""
import gzip
import os
import shutil
import struct
import zlib

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(ROOT))


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, payload):  # length-delimited
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def frame(message, compressed=False):
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(message)) + message


# config_fuzz: YAML text.
write("config_fuzz", "minimal.yaml", "upstream:\n  nodes: [\"127.0.0.1:6334\"]\n")
shutil.copy(os.path.join(REPO, "config", "qpool.yaml"),
            os.path.join(ROOT, "corpus", "config_fuzz", "qpool.yaml"))
shutil.copy(os.path.join(REPO, "deploy", "kubernetes", "qpool.yaml"),
            os.path.join(ROOT, "corpus", "config_fuzz", "sidecar.yaml"))
write("config_fuzz", "durations.yaml",
      "server:\n  listen: \"[::1]:6334\"\n  drain_timeout: 1500ms\n"
      "upstream:\n  nodes: [\"a:1\", \"b:2\"]\n  acquire_timeout: 2s\n  max_connections: 8\n"
      "retry:\n  max_attempts: 3\n  hedge_delay: 0s\n")
write("config_fuzz", "bad_key.yaml", "server:\n  listn: 1\n")

# grpc_timeout_fuzz: a header value.
for name, value in [("seconds", "1S"), ("millis", "250m"), ("max_digits", "99999999n"),
                    ("hours", "2H"), ("micro", "7u"), ("minutes", "10M")]:
    write("grpc_timeout_fuzz", name, value)

# method_class_fuzz: method index, mode byte (encoding in bits 0-1, bit 2 = frame it here), bytes.
# Selector writes in table order: 0 Upsert, 1 UpdateVectors, 2 Delete, 3 SetPayload,
# 4 OverwritePayload, 5 DeletePayload, 6 ClearPayload, 7 DeleteVectors.
name = field(1, b"c")
ids = field(3, field(1, field(1, varint(1 << 3) + varint(5))))   # points { ids { num: 5 } }
flt = field(3, field(2, b""))                                     # points { filter {} }
write("method_class_fuzz", "delete_ids_plain", bytes([2, 4]) + name + ids)
write("method_class_fuzz", "delete_filter_gzip", bytes([2, 4 | 1]) + name + flt)
write("method_class_fuzz", "upsert_conditional", bytes([0, 4]) + name + field(6, b""))
write("method_class_fuzz", "setpayload_raw_frame",
      bytes([3, 0]) + frame(name + field(5, field(1, field(1, varint(8) + varint(9))))))
write("method_class_fuzz", "delete_raw_gzip_frame",
      bytes([2, 1]) + frame(gzip.compress(name + ids), compressed=True))
write("method_class_fuzz", "delete_raw_zlib_frame",
      bytes([2, 2]) + frame(zlib.compress(name + ids), compressed=True))

# downstream_session_fuzz: byte 0 even = the target sends the client preface first; then HTTP/2
# frames. HPACK literals without indexing (0x00, name, value) keep the seeds readable.
def h2frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(
        ">I", stream) + payload


def literal(name, value):
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_headers(path, extra=()):
    block = b"".join(literal(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
        (b":authority", b"qpool"), (b"content-type", b"application/grpc"),
        (b"te", b"trailers"), *extra])
    return block


settings = h2frame(4, 0, 0, b"")
settings_ack = h2frame(4, 1, 0, b"")
health = request_headers(b"/qdrant.Qdrant/HealthCheck", [(b"grpc-timeout", b"100m")])
call = (h2frame(1, 4, 1, health) + h2frame(0, 1, 1, frame(b"")))
write("downstream_session_fuzz", "unary_call", b"\x00" + settings + settings_ack + call)
write("downstream_session_fuzz", "two_calls",
      b"\x00" + settings + call + h2frame(1, 4, 3, request_headers(b"/qdrant.Points/Delete"))
      + h2frame(0, 1, 3, frame(name + ids)))
write("downstream_session_fuzz", "reset_and_ping",
      b"\x00" + settings + h2frame(1, 4, 1, health) + h2frame(3, 0, 1, struct.pack(">I", 8))
      + h2frame(6, 0, 0, b"12345678") + h2frame(7, 0, 0, struct.pack(">II", 0, 0)))
write("downstream_session_fuzz", "bad_timeout_continuation",
      b"\x00" + settings + h2frame(1, 0, 1, request_headers(
          b"/qdrant.Points/Search", [(b"grpc-timeout", b"99999999H")]))
      + h2frame(9, 4, 1, literal(b"x-extra", b"1")) + h2frame(0, 1, 1, frame(b"\x0a\x01c")))
write("downstream_session_fuzz", "http1", b"\x01GET / HTTP/1.1\r\nHost: x\r\n\r\n")
