"""The Python peer of benchmark 4: a pymodbus loop polling the same stubs and points as dcguard's poller.

Usage: pymodbus_peer.py PLAN.json WARMUP_SECS SECS

PLAN.json (written by the bench) lists endpoints, their units and the daemon's planned
requests with each point's decoding. The loop reads every request of every device of
every endpoint in turn with the synchronous ModbusTcpClient (one connection per
endpoint, the way a user's script would), decodes each point (struct, word order,
scale and offset) and counts points. After WARMUP_SECS it measures SECS seconds of
process CPU (time.process_time) and prints one JSON line. Bounded in time and count.
"""

import json
import struct
import sys
import time

from pymodbus.client import ModbusTcpClient

FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q",
           "f32": ">f", "f64": ">d"}
WIDTHS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4, "i64": 4, "f32": 2, "f64": 4}


def ordered_bytes(words, order):
    """The value's bytes, most significant first, for the given word/byte order."""
    if order in ("CDAB", "DCBA"):
        words = list(reversed(words))
    raw = b"".join(struct.pack(">H", w) for w in words)
    if order in ("BADC", "DCBA"):
        raw = bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i]))
    return raw


def decode(point, words, bits):
    kind = point["type"]
    at = point["at"]
    if kind == "bool":
        return bits[at]
    if kind == "bit":
        return (words[at] >> point["a"]) & ((1 << point["b"]) - 1)
    if kind == "string":
        raw = ordered_bytes(words[at:at + point["a"]], "ABCD" if point["order"] in ("ABCD", "CDAB") else "BADC")
        return raw.rstrip(b"\x00 ").decode("ascii", "replace")
    fmt = FORMATS[kind]
    (raw,) = struct.unpack(fmt, ordered_bytes(words[at:at + WIDTHS[kind]], point["order"]))
    return raw * point["scale"] + point["offset"]


def main():
    plan_path, warmup, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    with open(plan_path, encoding="utf-8") as f:
        endpoints = json.load(f)
    clients = []
    for ep in endpoints:
        client = ModbusTcpClient(ep["host"], port=ep["port"], timeout=1, retries=0)
        client.connect()
        clients.append((client, ep["devices"]))
    points = requests = errors = 0
    start = time.monotonic()
    measuring = False
    t0 = c0 = 0.0
    loops = 0
    while loops < 1_000_000:
        loops += 1
        now = time.monotonic()
        if not measuring and now - start >= warmup:
            measuring = True
            points = requests = errors = 0
            t0, c0 = now, time.process_time()
        if measuring and now - t0 >= secs:
            break
        for client, devices in clients:
            for device in devices:
                unit = device["unit"]
                for r in device["requests"]:
                    fc, first, count = r["fc"], r["start"], r["count"]
                    try:
                        if fc == 3:
                            rr = client.read_holding_registers(first, count=count, device_id=unit)
                        elif fc == 4:
                            rr = client.read_input_registers(first, count=count, device_id=unit)
                        elif fc == 1:
                            rr = client.read_coils(first, count=count, device_id=unit)
                        else:
                            rr = client.read_discrete_inputs(first, count=count, device_id=unit)
                    except Exception:  # noqa: BLE001 - a failed request is counted, not fatal
                        errors += 1
                        requests += 1
                        continue
                    requests += 1
                    if rr.isError():
                        errors += 1
                        continue
                    words = getattr(rr, "registers", None) or []
                    bits = getattr(rr, "bits", None) or []
                    for point in r["points"]:
                        try:
                            decode(point, words, bits)
                        except Exception:  # noqa: BLE001
                            errors += 1
                        points += 1
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - c0
    for client, _ in clients:
        client.close()
    print(json.dumps({"points": points, "requests": requests, "errors": errors,
                      "cpu_secs": cpu, "secs": elapsed}))


if __name__ == "__main__":
    main()
