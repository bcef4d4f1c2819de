"""Whatever a client sends, the emulator answers with a JSON 4xx or a success, never a 5xx, and keeps serving."""

from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.emulator import Emulator
from tests.conftest import fast_settings

AUTH = {"Authorization": "Bearer test-token"}



def _header_safe(raw: bytes) -> bytes:
    """What HTTP allows in a header value at all (no control characters, no edge whitespace)."""
    return bytes(b for b in raw if b >= 0x20 and b != 0x7F).strip(b" ")


header_text = st.binary(max_size=60).map(_header_safe)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=20)
known_keys = st.sampled_from(
    ["type", "title", "description", "qualities", "tags", "metadata", "is_public", "limit", "offset", "sort_by", "order_by", "status", "search", "player_theme_id"]
)
json_objects = st.dictionaries(known_keys | st.text(max_size=8), json_values, max_size=6)
content_ranges = st.one_of(
    st.builds(lambda a, b, t: f"bytes {a}-{b}/{t}", st.integers(-5, 300), st.integers(-5, 300), st.integers(-5, 300)),
    st.builds(lambda n, t: f"part {n}/{t}", st.integers(-2, 5), st.sampled_from(["*", "1", "2", "x"])),
    st.text(max_size=30).map(lambda s: _header_safe(s.encode("utf-8"))),
)
id_segments = st.one_of(st.just("{media}"), st.builds(lambda: str(uuid.uuid4())), st.text(max_size=40).map(lambda s: quote(s, safe="")))
paths = st.one_of(
    st.sampled_from(["/media", "/media/create", "/media/cost", "/media/", "/other", ""]),
    st.builds(lambda i, tail: f"/media/{i}{tail}", id_segments, st.sampled_from(["", "/part", "/complete", "/part/x", "/"])),
)
queries = st.dictionaries(st.sampled_from(["qualities", "type", "duration", "x"]) | st.text(max_size=5), st.text(max_size=20), max_size=4)
auth_headers = st.one_of(
    st.just(AUTH),
    st.just({"stream-public-key": "test-public", "stream-secret-key": "test-secret"}),
    st.builds(lambda v: {"Authorization": v}, header_text),
    st.builds(lambda a, b: {"stream-public-key": a, "stream-secret-key": b}, header_text, header_text),
)
form_fields = st.dictionaries(st.sampled_from(["index", "hash", "other"]), st.text(max_size=40), max_size=3)


@st.composite
def requests(draw) -> dict:
    method = draw(st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"]))
    headers = dict(draw(auth_headers))
    if draw(st.booleans()):
        headers["Content-Range"] = draw(content_ranges)
    kind = draw(st.sampled_from(["none", "json", "raw", "form"]))
    request: dict = {"method": method, "path": draw(paths), "params": draw(queries), "headers": headers}
    if kind == "json":
        request["content"] = json.dumps(draw(json_objects | json_values)).encode()
        headers["Content-Type"] = "application/json"
    elif kind == "raw":
        request["content"] = draw(st.binary(max_size=300))
        headers["Content-Type"] = draw(header_text | st.just(b"multipart/form-data; boundary=xyz"))
    elif kind == "form":
        request["data"] = draw(form_fields)
        request["files"] = {draw(st.sampled_from(["file", "other"])): ("part", draw(st.binary(max_size=200)))}
    return request


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory):
    with Emulator(fast_settings(strict_official=False), data_dir=tmp_path_factory.mktemp("fuzz")) as emulator:
        with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
            yield emulator, client


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
def test_never_answers_5xx(fuzz_target, request: dict):
    emulator, client = fuzz_target
    media_id = client.post("/media/create", json={"type": "audio", "title": "fuzz"}, headers=AUTH).json()["data"]["id"]
    path = "/api" + request.pop("path").replace("{media}", media_id)
    url = f"{emulator.origin}{path}"
    if request["params"]:
        url += "?" + urlencode(request.pop("params"))
    else:
        request.pop("params")
    response = client.request(url=url, **request)
    assert response.status_code < 500, response.text
    if request["method"] != "HEAD":
        assert response.json()["status"] in {"success", "error"}
    assert client.post("/media", json={"limit": 1}, headers=AUTH).status_code == 200


def test_malformed_http_gets_a_json_4xx(fuzz_target):
    emulator, _ = fuzz_target
    requests_lines = (
        b"NONSENSE\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
        b"POST /api/media HTTP/1.1\r\nContent-Length: x\r\nAuthorization: Bearer test-token\r\n\r\n",
        b"POST /api/media HTTP/1.1\r\nTransfer-Encoding: gzip\r\nAuthorization: Bearer test-token\r\n\r\n",
    )
    for raw in requests_lines:
        with socket.create_connection((emulator.host, emulator.port), timeout=5) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert 400 <= status < 500, head
        assert json.loads(body)["status"] == "error"
