"""Each request form AIOZ's official clients send, written out byte by byte, against the strict emulator.

The forms come from the API contract's list of what the official Go and Node clients send (their test
suites run against the live service); each must be accepted and answered in a form those clients parse:
``Content-Type: application/json`` exactly, and a JSON body with a ``status``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import pytest

from ingestd.emulator import Emulator

from .audio import write_wav
from .conftest import TEST_MIN_PART_SIZE
from .daemon import wait_for

BEARER = ("Authorization", "Bearer test-token")
BASIC = ("Authorization", "Basic " + base64.b64encode(b"test-public:test-secret").decode())
PAIR = [("stream-public-key", "test-public"), ("stream-secret-key", "test-secret")]
JSON = ("Content-Type", "application/json")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, checked to be what the official clients parse."""
        assert self.headers["content-type"] == "application/json", self.headers["content-type"]
        payload = json.loads(self.body)
        assert isinstance(payload, dict) and payload.get("status") in ("success", "error"), payload
        return payload


def raw_request(method: str, path: str, headers: list[tuple[str, str]], body: bytes | None = None) -> bytes:
    lines = [f"{method} /api{path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def read_answer(stream: BinaryIO) -> Answer | None:
    """One answer off the connection; None once the server closed it."""
    line = stream.readline()
    if not line:
        return None
    assert line.startswith(b"HTTP/1.1 "), line[:80]
    headers = {}
    while (header := stream.readline()) not in (b"\r\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(line.split()[1]), headers, stream.read(int(headers.get("content-length", "0"))))


def exchange(emulator: Emulator, *requests: bytes) -> list[Answer]:
    """Send the requests on one connection, pipelined, and read every answer until the server stops."""
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as sock:
        sock.sendall(b"".join(requests))
        stream = sock.makefile("rb")
        answers = []
        for _ in requests:
            answer = read_answer(stream)
            if answer is None:
                break
            answers.append(answer)
            if answer.headers.get("connection") == "close":
                break
        return answers


def call(emulator: Emulator, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None = None) -> Answer:
    [answer] = exchange(emulator, raw_request(method, path, headers, body))
    return answer


def multipart(fields: list[tuple[str, bytes, str | None]]) -> tuple[str, bytes]:
    """A multipart/form-data body with the fields in exactly this order; (name, value, filename)."""
    boundary = secrets.token_hex(12)
    body = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + value + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def create(emulator: Emulator, auth=(BEARER,)) -> str:
    answer = call(emulator, "POST", "/media/create", [*auth, JSON], json.dumps({"title": "Conformance", "type": "audio"}).encode())
    assert answer.status == 201, answer.body
    return answer.json()["data"]["id"]


def complete_and_wait(emulator: Emulator, media_id: str, data: bytes) -> None:
    answer = call(emulator, "GET", f"/media/{media_id}/complete", [BEARER])
    assert answer.status == 200, answer.json()
    assert answer.json()["status"] == "success"
    done = wait_for(lambda: call(emulator, "GET", f"/media/{media_id}", [BEARER]).json()["data"]["status"] == "done",
                    timeout=10, what="transcoded")
    assert done and emulator.media_file(media_id).read_bytes() == data


@pytest.fixture
def wav(tmp_path) -> bytes:
    """A real WAV of a little over two test-sized parts."""
    return write_wav(tmp_path / "tone.wav", (2 * TEST_MIN_PART_SIZE + 5000) / (44100 * 4)).read_bytes()


def chunks(data: bytes) -> list[tuple[int, bytes]]:
    return [(start, data[start : start + TEST_MIN_PART_SIZE]) for start in range(0, len(data), TEST_MIN_PART_SIZE)]


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).hexdigest().encode()


def byte_range(start: int, data: bytes, whole: bytes) -> tuple[str, str]:
    return ("Content-Range", f"bytes {start}-{start + len(data) - 1}/{len(whole)}")


def upload_progressively(emulator: Emulator, media_id: str, wav: bytes, file_field: str) -> None:
    """The official clients' progressive form: each part carries only its file, under ``part N/*`` (the last ``N/N``)."""
    pieces = chunks(wav)
    for number, (_, data) in enumerate(pieces, start=1):
        ctype, body = multipart([(file_field, data, "tone.wav")])
        total = str(number) if number == len(pieces) else "*"
        answer = call(emulator, "POST", f"/media/{media_id}/part",
                      [BEARER, ("Content-Type", ctype), ("Content-Range", f"part {number}/{total}")], body)
        assert answer.status == 200, answer.json()


# -- Go client -----------------------------------------------------------------


def test_go_basic_auth_alone(emulator):
    answer = call(emulator, "POST", "/media", [BASIC, JSON], b'{"limit": 1}')
    assert answer.status == 200 and answer.json()["data"]["total"] == 0


def test_go_create_without_type_makes_a_video(emulator):
    answer = call(emulator, "POST", "/media/create", [BEARER, JSON], b'{"title": "No type"}')
    assert answer.status == 201
    assert answer.json()["data"]["type"] == "video"


def test_go_parts_in_the_order_file_hash_index_numbered_from_1(emulator, wav):
    media_id = create(emulator)
    for number, (start, data) in enumerate(chunks(wav), start=1):
        ctype, body = multipart([("file", data, "tone.wav"), ("hash", md5(data), None), ("index", str(number).encode(), None)])
        headers = [BEARER, ("Content-Type", ctype), byte_range(start, data, wav)]
        answer = call(emulator, "POST", f"/media/{media_id}/part", headers, body)
        assert answer.status == 200, answer.json()
    complete_and_wait(emulator, media_id, wav)


def test_go_progressive_parts_carry_only_the_file_and_a_part_range(emulator, wav):
    media_id = create(emulator)
    upload_progressively(emulator, media_id, wav, "file")
    complete_and_wait(emulator, media_id, wav)


# -- Node client ---------------------------------------------------------------


def test_node_bearer_with_empty_stream_key_headers(emulator):
    answer = call(emulator, "POST", "/media", [BEARER, ("stream-public-key", ""), ("stream-secret-key", ""), JSON], b"{}")
    assert answer.status == 200


def test_node_basic_together_with_the_stream_key_pair(emulator):
    media_id = create(emulator, auth=(BASIC, *PAIR))
    assert call(emulator, "GET", f"/media/{media_id}", [BASIC, *PAIR]).status == 200


def test_node_parts_in_either_field_order_in_parallel_and_out_of_order(emulator, wav):
    media_id = create(emulator)
    orders = (("hash", "index", "file"), ("file", "index", "hash"))

    def send(numbered: tuple[int, tuple[int, bytes]]) -> Answer:
        number, (start, data) = numbered
        values = {"file": (data, "tone.wav"), "index": (str(number).encode(), None), "hash": (md5(data), None)}
        ctype, body = multipart([(name, *values[name]) for name in orders[number % 2]])
        headers = [BEARER, ("Content-Type", ctype), byte_range(start, data, wav)]
        return call(emulator, "POST", f"/media/{media_id}/part", headers, body)

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(send, reversed(list(enumerate(chunks(wav), start=1)))))
    assert [a.status for a in answers] == [200] * len(answers)
    complete_and_wait(emulator, media_id, wav)


def test_node_progressive_file_field_named_after_the_file(emulator, wav):
    media_id = create(emulator)
    upload_progressively(emulator, media_id, wav, "tone.wav")
    complete_and_wait(emulator, media_id, wav)


# -- both, and the spec ----------------------------------------------------------


def test_a_single_part_upload_without_content_range(emulator, tmp_path):
    data = write_wav(tmp_path / "short.wav", 0.2).read_bytes()
    media_id = create(emulator)
    ctype, body = multipart([("file", data, "short.wav"), ("index", b"1", None), ("hash", md5(data), None)])
    answer = call(emulator, "POST", f"/media/{media_id}/part", [BEARER, ("Content-Type", ctype)], body)
    assert answer.status == 200, answer.json()
    complete_and_wait(emulator, media_id, data)


def test_create_as_a_url_encoded_form(emulator):
    body = b"title=Form+made&type=audio&tags=a&tags=b&metadata[0][key]=k&metadata[0][value]=v&is_public=false"
    answer = call(emulator, "POST", "/media/create", [BEARER, ("Content-Type", "application/x-www-form-urlencoded")], body)
    assert answer.status == 201, answer.json()
    media = answer.json()["data"]
    assert (media["title"], media["type"], media["tags"], media["is_public"]) == ("Form made", "audio", ["a", "b"], False)
    assert media["metadata"] == [{"key": "k", "value": "v"}]


@pytest.mark.parametrize("order", [{"sort_by": "created_at", "order_by": "desc"}, {"order_by": "created_at", "sort_by": "desc"}])
def test_list_takes_sort_by_and_order_by_either_way_round(emulator, order):
    first, second = create(emulator), create(emulator)
    answer = call(emulator, "POST", "/media", [BEARER, JSON], json.dumps({"type": "video"} | order).encode())
    assert answer.status == 200 and answer.json()["data"]["videos"] == []
    answer = call(emulator, "POST", "/media", [BEARER, JSON], json.dumps(order | {"limit": 10}).encode())
    data = answer.json()["data"]
    assert [m["id"] for m in data["videos"]] == [second, first] == [m["id"] for m in data["media"]]


def test_error_answers_are_exactly_application_json_too(emulator):
    for answer in (call(emulator, "GET", "/media/not-an-id", [BEARER]), call(emulator, "POST", "/media", [JSON], b"{}")):
        assert answer.status in (401, 404)
        assert answer.json()["status"] == "error"


@pytest.mark.parametrize("method, path", [("POST", "/media"), ("PATCH", "/media/{id}")])
def test_list_and_update_without_a_body_are_refused(emulator, method, path):
    media_id = create(emulator)
    answer = call(emulator, method, path.format(id=media_id), [BEARER, JSON], b"")
    assert answer.status == 400
    assert answer.json()["message"] == "request body is required"


# -- connections -----------------------------------------------------------------


def test_a_body_refused_after_it_was_all_read_keeps_the_connection_for_the_next_request(emulator):
    media_id = create(emulator)
    ctype, body = multipart([("index", b"1" * 5000, None), ("file", b"x" * 100, "p")])
    refused = raw_request("POST", f"/media/{media_id}/part", [BEARER, ("Content-Type", ctype), ("Content-Range", "bytes 0-99/100")], body)
    following = raw_request("GET", f"/media/{media_id}", [BEARER])
    first, second = exchange(emulator, refused, following)
    assert first.status == 400 and "longer than" in first.json()["message"]
    assert "connection" not in first.headers
    assert second.status == 200 and second.json()["data"]["id"] == media_id


def test_a_body_refused_part_way_closes_the_connection_so_its_rest_is_never_read_as_a_request(emulator):
    media_id = create(emulator)
    size = 2 * 1024 * 1024
    ctype, body = multipart([("index", b"1" * 5000, None), ("file", b"G" * size, "p")])
    head = raw_request("POST", f"/media/{media_id}/part", [BEARER, ("Content-Type", ctype), ("Content-Range", f"bytes 0-{size - 1}/{size}")])
    head = head.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode(), 1)
    sent = 1024 * 1024  # what the emulator reads in one go: it refuses the form inside that first read
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as sock:
        sock.sendall(head + body[:sent])
        stream = sock.makefile("rb")
        answer = read_answer(stream)
        assert answer is not None and answer.status == 400
        assert answer.headers.get("connection") == "close"
        try:
            sock.sendall(body[sent:] + raw_request("GET", f"/media/{media_id}", [BEARER]))
        except OSError:
            pass  # closed already: nothing more can be parsed from it
        try:
            assert read_answer(stream) is None, "the rest of the body was read as a request"
        except ConnectionResetError:
            pass


# -- what strict mode refuses --------------------------------------------------------


def test_strict_mode_refuses_the_key_pair_without_basic(emulator):
    assert call(emulator, "POST", "/media", [*PAIR, JSON], b"{}").status == 401


@pytest.mark.parametrize("body", [{"metadata": {"k": "v"}}, {"status": "done"}, {"tags": "a,b"}])
def test_strict_mode_refuses_list_filters_as_maps_or_bare_strings(emulator, body):
    answer = call(emulator, "POST", "/media", [BEARER, JSON], json.dumps(body).encode())
    assert answer.status == 400
    assert answer.json()["message"].startswith(next(iter(body)))


def test_strict_mode_refuses_part_index_0(emulator):
    media_id = create(emulator)
    data = b"x" * 100
    ctype, body = multipart([("file", data, "p"), ("index", b"0", None), ("hash", md5(data), None)])
    answer = call(emulator, "POST", f"/media/{media_id}/part", [BEARER, ("Content-Type", ctype), ("Content-Range", "bytes 0-99/100")], body)
    assert answer.status == 400 and answer.json()["message"].startswith("index")


def test_strict_mode_refuses_player_theme_id(emulator):
    media_id = create(emulator)
    answer = call(emulator, "PATCH", f"/media/{media_id}", [BEARER, JSON], b'{"player_theme_id": "t"}')
    assert answer.status == 400
    assert call(emulator, "PATCH", f"/media/{media_id}", [BEARER, JSON], b'{"player_id": "t"}').status == 200
