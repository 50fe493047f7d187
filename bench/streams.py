#!/usr/bin/env python3
"""Open streams of GET /messages/stream against a running service and measure what they cost.

usage: bench/streams.py BASE_URL SERVER_PID [STREAMS] [MESSAGES]
       (defaults 1000 streams, 200 messages; WEBHOOK_SECRET signs the messages, default testsecret)

1. reads the server's resident memory (VmRSS of /proc/PID/status) with no stream open;
2. opens STREAMS streams (raw HTTP/1.1, one connection each) and reads each one's first frame;
3. reads the resident memory again after 5 s of idling;
4. posts MESSAGES signed messages, one at a time, and records for every stream and message the
   time from the POST's answer to the event's arrival (the fan-out lag);
5. reads the resident memory once more, and prints one JSON line with all figures.
Every stream must receive every message once; the script fails otherwise.

With HOLD_SECONDS set (bench/run.sh's streams-while-ingesting figure), steps 4 and 5 change:
after opening the streams it creates READY_FILE (so that the caller starts its full-speed
ingest), reads every stream as fast as it can for HOLD_SECONDS while posting a marker message
every 100 ms, then prints: the events received, the streams the service closed for reading too
slowly, and the lag from each marker's answer to its event on the streams that received it.
"""
import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from urllib.parse import urlparse


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_stream(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /messages/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stream refused: {head!r}")
    return reader, writer


async def read_events(reader, expected, arrivals):
    """Reads chunked SSE until `expected` message events came; notes when each came."""
    buffer = b""
    seen = 0
    while seen < expected:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        chunk = await reader.readexactly(size + 2)
        buffer += chunk[:-2]
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            if b"event: message" in frame:
                data = next(line for line in frame.split(b"\n") if line.startswith(b"data: "))
                message_id = json.loads(data[6:])["message_id"]
                arrivals.append((message_id, time.monotonic()))
                seen += 1


async def post(host, port, secret, body):
    reader, writer = await asyncio.open_connection(host, port)
    signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
    writer.write(
        (f"POST /webhook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
         f"X-Signature: {signature}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    if b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"POST refused: {answer[:200]!r}")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def read_until_closed(reader, arrivals):
    """Reads chunked SSE until the service ends the stream; counts every message event and
    notes when each marker came. Returns the number of events."""
    buffer = b""
    events = 0
    try:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                return events
            buffer += (await reader.readexactly(size + 2))[:-2]
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if b"event: message" not in frame:
                    continue
                events += 1
                if b"stream-marker-" in frame:
                    data = next(line for line in frame.split(b"\n") if line.startswith(b"data: "))
                    arrivals.append((json.loads(data[6:])["message_id"], time.monotonic()))
    except (asyncio.IncompleteReadError, ConnectionError):
        return events


async def while_ingesting(host, port, secret, pid, streams, hold_seconds, ready_file):
    connections = [await open_stream(host, port) for _ in range(streams)]
    idle = rss_kib(pid)
    arrivals = [[] for _ in connections]
    readers = [asyncio.create_task(read_until_closed(reader, arrivals[n]))
               for n, (reader, _) in enumerate(connections)]
    open(ready_file, "w").close()
    acknowledged = {}
    run = f"{time.time_ns()}"
    deadline = time.monotonic() + hold_seconds
    n = 0
    while time.monotonic() < deadline:
        message_id = f"stream-marker-{run}-{n}"
        body = json.dumps({"message_id": message_id, "from": "+919876543210", "to": "+14155550100",
                           "ts": "2025-01-15T10:00:00Z", "text": f"marker {n}"}).encode()
        await post(host, port, secret, body)
        acknowledged[message_id] = time.monotonic()
        n += 1
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)
    closed_by_service = sum(reader.done() for reader in readers)
    peak = rss_kib(pid)
    for _, writer in connections:
        writer.close()
    events = sum(await asyncio.gather(*readers))
    lags_ms = [max(0.0, (at - acknowledged[message_id]) * 1000)
               for stream in arrivals for message_id, at in stream if message_id in acknowledged]
    print(json.dumps({
        "streams": streams,
        "markers": len(acknowledged),
        "events_received": events,
        "streams_closed_as_too_slow": closed_by_service,
        "marker_events": len(lags_ms),
        "lag_ms_p50": round(percentile(lags_ms, 0.50), 2) if lags_ms else None,
        "lag_ms_p99": round(percentile(lags_ms, 0.99), 2) if lags_ms else None,
        "rss_kib_idle_streams": idle,
        "rss_kib_end": peak,
    }))


async def main():
    base, pid = sys.argv[1], int(sys.argv[2])
    streams = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    messages = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    secret = os.environ.get("WEBHOOK_SECRET", "testsecret").encode()
    url = urlparse(base)
    host, port = url.hostname, url.port or 80
    if os.environ.get("HOLD_SECONDS"):
        await while_ingesting(host, port, secret, pid, streams, float(os.environ["HOLD_SECONDS"]),
                              os.environ["READY_FILE"])
        return
    before = rss_kib(pid)
    connections = []
    for _ in range(streams):
        connections.append(await open_stream(host, port))
    await asyncio.sleep(5)
    idle = rss_kib(pid)
    arrivals = [[] for _ in connections]
    readers = [asyncio.create_task(read_events(reader, messages, arrivals[n]))
               for n, (reader, _) in enumerate(connections)]
    acknowledged = {}
    run = f"{time.time_ns()}"
    for n in range(messages):
        message_id = f"stream-bench-{run}-{n}"
        body = json.dumps({"message_id": message_id, "from": "+919876543210", "to": "+14155550100",
                           "ts": "2025-01-15T10:00:00Z", "text": f"message {n}"}).encode()
        await post(host, port, secret, body)
        acknowledged[message_id] = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*readers), timeout=120)
    flowing = rss_kib(pid)
    lags_ms = []
    for stream in arrivals:
        ids = [message_id for message_id, _ in stream]
        if sorted(ids) != sorted(acknowledged) or len(set(ids)) != len(ids):
            raise RuntimeError("a stream missed or repeated a message")
        lags_ms.extend(max(0.0, (at - acknowledged[message_id]) * 1000) for message_id, at in stream)
    for _, writer in connections:
        writer.close()
    print(json.dumps({
        "streams": streams,
        "messages": messages,
        "rss_kib_no_stream": before,
        "rss_kib_idle_streams": idle,
        "rss_kib_after_messages": flowing,
        "kib_per_idle_stream": round((idle - before) / max(1, streams), 1),
        "events_received": sum(len(stream) for stream in arrivals),
        "lag_ms_p50": round(percentile(lags_ms, 0.50), 2),
        "lag_ms_p99": round(percentile(lags_ms, 0.99), 2),
        "lag_ms_max": round(max(lags_ms), 2),
    }))


asyncio.run(main())
