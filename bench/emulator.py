"""Figure 6: the emulator's own ingest rate, fed by a bare ``http.client`` sender from memory.

The sender prebuilds each multipart body (hash included), so the figure is what the
emulator can take in: parsing, MD5, spooling to disk and assembling on complete.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import MIB, EmulatorProcess, Row, Scale, log, mb_per_s

BOUNDARY = "benchboundary0123456789"
HEADERS = {"Authorization": "Bearer test-token"}


def part_body(index: int, data: bytes) -> bytes:
    dash = f"--{BOUNDARY}\r\n".encode()
    return (dash + b'Content-Disposition: form-data; name="index"\r\n\r\n' + str(index).encode() + b"\r\n"
            + dash + b'Content-Disposition: form-data; name="file"; filename="part"\r\n'
            + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
            + dash + b'Content-Disposition: form-data; name="hash"\r\n\r\n' + hashlib.md5(data).hexdigest().encode()
            + f"\r\n--{BOUNDARY}--\r\n".encode())


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> dict:
    conn.request(method, path, body=body, headers=HEADERS | (headers or {}))
    response = conn.getresponse()
    payload = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {payload[:200]!r}")
    return json.loads(payload) if payload else {}


def ingest(base_url: str, part_size: int, parts: int) -> tuple[float, float]:
    """Send one media of ``parts`` parts; seconds for the parts, and for the complete call."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    api = url.path
    created = _request(conn, "POST", f"{api}/media/create", json.dumps({"type": "audio", "title": "bench"}).encode(),
                       {"Content-Type": "application/json"})
    media_id = created["data"]["id"]
    data = os.urandom(part_size)
    bodies = [part_body(index, data) for index in range(parts)]
    total = part_size * parts
    started = time.perf_counter()
    for index, body in enumerate(bodies):
        start = index * part_size
        _request(conn, "POST", f"{api}/media/{media_id}/part", body, {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Range": f"bytes {start}-{start + part_size - 1}/{total}",
        })
    sent = time.perf_counter() - started
    started = time.perf_counter()
    _request(conn, "GET", f"{api}/media/{media_id}/complete")
    completed = time.perf_counter() - started
    conn.close()
    return sent, completed


def run(scale: Scale) -> list[Row]:
    rows = []
    cases = [("large parts", 50 * MIB, scale.pick(20, 6)), ("small parts", 64 * 1024, scale.pick(2000, 500))]
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as scratch:
        for name, size, count in cases:
            with EmulatorProcess(Path(scratch) / name, min_part_size="64KiB") as emulator:
                sent, completed = ingest(emulator.base_url, size, count)
            total = size * count
            log(f"emulator {name}: {count / sent:.0f} parts/s, {mb_per_s(total, sent):.0f} MB/s, complete {completed:.2f}s")
            label = f"{count} × {size // MIB} MiB" if size >= MIB else f"{count} × {size // 1024} KiB"
            rows.append(Row("emulator", f"ingest, {label}", f"{mb_per_s(total, sent):.0f} MB/s, {count / sent:.0f} parts/s"))
            rows.append(Row("emulator", f"complete (assemble {total // MIB} MiB)", f"{completed:.2f} s"))
    return rows
