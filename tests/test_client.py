"""The API client against the emulator over loopback; MockTransport only for answers the emulator never gives."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import socket
import ssl
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ingestd import __version__
from ingestd.client import Part, StreamClient, plan_parts
from ingestd.config import ApiConfig
from ingestd.emulator import Account, Emulator, Faults
from ingestd.errors import (
    APIConnectionError,
    AuthError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    ServerError,
    SourceChangedError,
    TransientError,
)
from ingestd.media_schema import AudioConfig, CreateRequest, MetadataItem, Quality, UpdateRequest
from ingestd.models import Media
from tests.audio import write_wav_of_size

KIB = 1024
MIB = 1024 * KIB
TOKEN = "test-token"


def _quality(resolution: str = "standard", type: str = "hls") -> Quality:
    container = "mpegts" if type == "hls" else "fmp4"
    config = AudioConfig(codec="aac", bitrate=128000, channels="2", sample_rate=44100)
    return Quality(resolution=resolution, type=type, container_type=container, audio_config=config)


def _request(title: str = "Episode 1", **fields) -> CreateRequest:
    return CreateRequest(type="audio", title=title, **fields)


def _metadata(**items: str) -> list[MetadataItem]:
    return [MetadataItem(key=k, value=v) for k, v in items.items()]


def _parts(path: Path, chunk_size: int, index_base: int = 1) -> list[Part]:
    size = path.stat().st_size
    return [Part(path, index, start, length, size) for index, start, length in plan_parts(size, chunk_size, index_base)]


def _wait_for_status(client: StreamClient, media_id: str, wanted: str, timeout: float = 10.0) -> Media:
    deadline = time.monotonic() + timeout
    while True:
        media = client.get_media(media_id)
        if media.status == wanted or time.monotonic() > deadline:
            assert media.status == wanted, f"media stayed {media.status!r}"
            return media
        time.sleep(0.05)


def _mock_client(handler) -> StreamClient:
    return StreamClient("https://api.example.test/api", token=TOKEN, transport=httpx.MockTransport(handler))


@pytest.fixture
def client(emulator: Emulator) -> Iterator[StreamClient]:
    with StreamClient(emulator.base_url, token=TOKEN, timeout=10) as client:
        yield client


# --- plan_parts ----------------------------------------------------------------------


def test_plan_parts_splits_into_chunks_with_a_shorter_last_part():
    assert plan_parts(250, 100) == [(1, 0, 100), (2, 100, 100), (3, 200, 50)]
    assert plan_parts(200, 100, index_base=0) == [(0, 0, 100), (1, 100, 100)]


def test_plan_parts_keeps_a_small_file_in_one_part_and_refuses_an_empty_one():
    assert plan_parts(10, 100) == [(1, 0, 10)]
    with pytest.raises(ValueError):
        plan_parts(0, 100)


# --- endpoints -----------------------------------------------------------------------


def test_create_then_get_returns_the_new_media(client: StreamClient):
    request = _request(description="pilot", tags=["podcast"], metadata=_metadata(source="a.wav"),
                       qualities=[_quality("standard"), _quality("highest", "dash")])
    created = client.create_media(request)

    assert created.status == "new"
    assert created.title == "Episode 1"
    assert created.metadata_dict() == {"source": "a.wav"}
    assert [(q.name, q.status, q.type) for q in created.qualities] == [("standard", "new", "hls"), ("highest", "new", "dash")]
    fetched = client.get_media(created.id)
    assert fetched.id == created.id and fetched.tags == ["podcast"] and fetched.description == "pilot"
    assert client.rate_limit.limit is not None and client.rate_limit.remaining is not None


class _Recorder(httpx.BaseTransport):
    """A real transport that keeps each request's headers and (JSON) body."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/part"):
            request.read()
        self.sent.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_the_stream_key_pair_authenticates(emulator: Emulator):
    with StreamClient(emulator.base_url, public_key="test-public", secret_key="test-secret") as client:
        media = client.create_media(_request())
        assert client.get_media(media.id).id == media.id


def test_a_key_pair_goes_out_as_basic_together_with_the_stream_key_headers(emulator: Emulator):
    # The strict emulator refuses the pair alone, which no official client sends.
    recorder = _Recorder()
    with StreamClient(emulator.base_url, public_key="test-public", secret_key="test-secret", transport=recorder) as client:
        client.list_media(limit=1)
    [request] = recorder.sent
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"test-public:test-secret").decode()
    assert (request.headers["stream-public-key"], request.headers["stream-secret-key"]) == ("test-public", "test-secret")


def test_list_filters_go_out_in_the_spec_shapes(emulator: Emulator):
    recorder = _Recorder()
    with StreamClient(emulator.base_url, token=TOKEN, transport=recorder) as client:
        client.list_media(metadata={"show": "am"}, tags=["news"], status="done")
    body = json.loads(recorder.sent[0].content)
    assert body["metadata"] == [{"key": "show", "value": "am"}]
    assert (body["tags"], body["status"]) == (["news"], ["done"])


def test_the_update_names_the_player_player_id(emulator: Emulator):
    recorder = _Recorder()
    with StreamClient(emulator.base_url, token=TOKEN, transport=recorder) as client:
        media = client.create_media(_request())
        client.update_media(media.id, UpdateRequest(player_id="theme-7"))
        assert client.get_media(media.id).player_theme_id == "theme-7"
    assert json.loads(recorder.sent[-2].content) == {"player_id": "theme-7"}


def test_from_config_uses_the_configured_credentials(emulator: Emulator):
    api = ApiConfig(base_url=emulator.base_url, public_key="test-public", secret_key="test-secret", timeout=5)
    with StreamClient.from_config(api) as client:
        assert client.create_media(_request()).status == "new"


@pytest.mark.parametrize("credentials", [{"token": "wrong-token"}, {"public_key": "test-public", "secret_key": "wrong-secret"}])
def test_wrong_credentials_raise_auth_error_without_the_secret(emulator: Emulator, credentials: dict[str, str]):
    with StreamClient(emulator.base_url, **credentials) as client:
        with pytest.raises(AuthError) as caught:
            client.create_media(_request())
        error = caught.value
        assert (error.status_code, error.method, error.path) == (401, "POST", "/media/create")
        assert "credentials" in error.message
        for shown in (str(error), repr(error), repr(client)):
            assert "wrong-" not in shown


def test_server_side_validation_errors_are_rejections_naming_the_field(client: StreamClient):
    # Built around the local validation on purpose: the server must catch it too.
    bad_config = AudioConfig.model_construct(codec="aac", bitrate=128000, channels="2", sample_rate=12345, language="en", index=0)
    bad_quality = Quality.model_construct(resolution="good", type="hls", container_type="mpegts", audio_config=bad_config)
    request = CreateRequest.model_construct(type="audio", title="ok", qualities=[_quality(), bad_quality])

    with pytest.raises(RejectedError) as caught:
        client.create_media(request)
    assert caught.value.status_code == 400
    assert "qualities[1].audio_config.sample_rate" in caught.value.message


def test_update_sends_only_the_set_fields(client: StreamClient):
    media = client.create_media(_request(description="keep me", tags=["a"]))

    client.update_media(media.id, UpdateRequest(title="Renamed", metadata=_metadata(show="x")))

    updated = client.get_media(media.id)
    assert (updated.title, updated.description, updated.tags) == ("Renamed", "keep me", ["a"])
    assert updated.metadata_dict() == {"show": "x"}
    with pytest.raises(ValueError):
        client.update_media(media.id, UpdateRequest())


def test_delete_then_the_media_is_gone(client: StreamClient):
    media = client.create_media(_request())

    client.delete_media(media.id)

    with pytest.raises(NotFoundError) as caught:
        client.get_media(media.id)
    assert (caught.value.status_code, caught.value.path) == (404, f"/media/{media.id}")
    with pytest.raises(NotFoundError):
        client.delete_media(media.id)


def test_an_unknown_id_is_not_found(client: StreamClient):
    with pytest.raises(NotFoundError):
        client.get_media("no-such-media")


def test_media_cost_prices_the_presets(emulator_factory):
    emulator = emulator_factory(accounts=[Account(balance_usd=0.05)])
    rates = emulator.settings.rates
    with StreamClient(emulator.base_url, token=TOKEN) as client:
        cheap = client.media_cost(["standard", "good"], 120)
        assert cheap.price == pytest.approx(2 * (rates["standard"] + rates["good"]))
        assert cheap.is_enough is True
        assert client.media_cost(["lossless"], 600.5).is_enough is False
        with pytest.raises(RejectedError) as caught:
            client.media_cost(["ultra"], 60)
        assert "ultra" in caught.value.message


# --- uploads -------------------------------------------------------------------------


@pytest.mark.parametrize("index_base", [0, 1])
def test_parallel_multi_part_upload_arrives_byte_for_byte(emulator_factory, tmp_path: Path, index_base: int):
    # Numbered from 0 (the docs' curl example) only a lenient emulator takes; AIOZ's own clients count from 1.
    emulator = emulator_factory(strict_official=index_base == 1)
    client = StreamClient(emulator.base_url, token=TOKEN, timeout=10)
    audio = write_wav_of_size(tmp_path / "take one.wav", 300 * KIB + 123)
    parts = _parts(audio, 64 * KIB, index_base)
    assert len(parts) == 5
    media = client.create_media(_request())
    sent: list[int] = []

    with ThreadPoolExecutor(max_workers=3) as pool:
        hashes = list(pool.map(lambda part: client.upload_part(media.id, part, on_progress=sent.append), reversed(parts)))
    client.complete_upload(media.id)

    data = audio.read_bytes()
    assert hashes == [hashlib.md5(data[p.start : p.start + p.length]).hexdigest() for p in reversed(parts)]
    assert sum(sent) == len(data)
    done = _wait_for_status(client, media.id, "done")
    assert done.size == len(data)
    assert emulator.media_file(media.id).read_bytes() == data


class _WireTap(httpx.BaseTransport):
    """Passes requests to a real transport; can record or flip bytes of part bodies on the way."""

    def __init__(self, flip_at: int | None = None):
        self.inner = httpx.HTTPTransport()
        self.flip_at = flip_at
        self.chunk_sizes: list[int] = []
        self.body = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/part"):
            return self.inner.handle_request(request)
        tapped = httpx.Request(request.method, request.url, headers=request.headers, content=self._tap(request.stream))
        return self.inner.handle_request(tapped)

    def _tap(self, stream) -> Iterator[bytes]:
        for chunk in stream:
            offset = len(self.body)
            self.chunk_sizes.append(len(chunk))
            self.body += chunk
            if self.flip_at is not None and offset <= self.flip_at < offset + len(chunk):
                chunk = bytearray(chunk)
                chunk[self.flip_at - offset] ^= 0xFF
                chunk = bytes(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def test_the_part_body_streams_index_then_file_then_hash(emulator: Emulator, tmp_path: Path):
    audio = write_wav_of_size(tmp_path / 'say "hi"\nthere ü.wav', 3 * MIB + 5)
    tap = _WireTap()
    with StreamClient(emulator.base_url, token=TOKEN, transport=tap) as client:
        media = client.create_media(_request())
        md5 = client.upload_part(media.id, _parts(audio, 8 * MIB)[0])

    body = bytes(tap.body)
    index_at = body.index(b'name="index"')
    file_at = body.index(b'name="file"; filename="say %22hi%22%0Athere \xc3\xbc.wav"')
    hash_at = body.index(b'name="hash"\r\n\r\n' + md5.encode())
    assert index_at < file_at < hash_at
    assert md5 == hashlib.md5(audio.read_bytes()).hexdigest()
    # Streamed in reads of at most 1 MiB, never as one whole-part buffer.
    assert len(tap.chunk_sizes) >= 4 and max(tap.chunk_sizes) <= MIB + 512


def test_a_part_corrupted_in_transit_is_rejected_as_a_hash_mismatch(emulator: Emulator, tmp_path: Path):
    audio = write_wav_of_size(tmp_path / "a.wav", 100 * KIB)
    with StreamClient(emulator.base_url, token=TOKEN, transport=_WireTap(flip_at=50 * KIB)) as client:
        media = client.create_media(_request())
        with pytest.raises(RejectedError) as caught:
            client.upload_part(media.id, _parts(audio, 8 * MIB)[0])
    assert caught.value.status_code == 400
    assert "hash mismatch" in caught.value.message
    assert caught.value.path == f"/media/{media.id}/part"


def test_parts_that_disagree_on_the_file_size_are_rejected(client: StreamClient, tmp_path: Path):
    first = write_wav_of_size(tmp_path / "first.wav", 200 * KIB)
    other = write_wav_of_size(tmp_path / "other.wav", 300 * KIB)
    media = client.create_media(_request())
    client.upload_part(media.id, _parts(first, 64 * KIB)[0])

    with pytest.raises(RejectedError) as caught:
        client.upload_part(media.id, _parts(other, 64 * KIB)[1])
    assert "total" in caught.value.message


def test_a_file_that_shrinks_during_upload_stops_the_part(client: StreamClient, emulator: Emulator, tmp_path: Path):
    audio = write_wav_of_size(tmp_path / "growing.wav", 3 * MIB)
    media = client.create_media(_request())
    part = _parts(audio, 8 * MIB)[0]

    def truncate(_: int) -> None:
        os.truncate(audio, MIB)

    with pytest.raises(SourceChangedError):
        client.upload_part(media.id, part, on_progress=truncate)
    # Planned for the old size: refused before anything is sent.
    with pytest.raises(SourceChangedError):
        client.upload_part(media.id, part)
    assert not [r for r in emulator.requests if r.path.endswith("/part") and r.status == 200]
    assert client.get_media(media.id).status == "new"


def test_a_second_complete_is_rejected(client: StreamClient, tmp_path: Path):
    audio = write_wav_of_size(tmp_path / "a.wav", 10 * KIB)
    media = client.create_media(_request())
    client.upload_part(media.id, _parts(audio, 8 * MIB)[0])
    client.complete_upload(media.id)

    with pytest.raises(RejectedError) as caught:
        client.complete_upload(media.id)
    assert "already completed" in caught.value.message


def test_uploading_a_big_part_keeps_memory_far_below_its_size(client: StreamClient, tmp_path: Path):
    big = tmp_path / "big.wav"
    with big.open("wb") as out:
        out.truncate(64 * MIB)
    media = client.create_media(_request())

    tracemalloc.start()
    try:
        md5 = client.upload_part(media.id, _parts(big, 200 * 1000 * 1000)[0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # The emulator runs in this process too, so the peak covers both ends of the wire.
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"
    assert md5 == hashlib.md5(bytes(64 * MIB)).hexdigest()


# --- listing -------------------------------------------------------------------------


def test_list_filters_by_tags_metadata_search_and_status(client: StreamClient):
    morning = client.create_media(_request("Morning show", tags=["news", "daily"], metadata=_metadata(show="am")))
    evening = client.create_media(_request("Evening show", description="late NEWS recap", tags=["news"], metadata=_metadata(show="pm")))
    dropped = client.create_media(_request("Dropped", tags=["news", "daily"]))
    client.delete_media(dropped.id)

    def ids(**filters) -> list[str]:
        page = client.list_media(**filters)
        assert page.total == len(page.items)
        return [m.id for m in page.items]

    assert ids(tags=["news", "daily"]) == [morning.id]
    assert ids(metadata={"show": "pm"}) == [evening.id]
    assert ids(search="news") == [evening.id]
    assert ids(status="deleted") == [dropped.id]
    assert ids(status=["new", "deleted"], sort_by="title", order_by="asc") == [dropped.id, evening.id, morning.id]
    with pytest.raises(RejectedError):
        client.list_media(sort_by="colour")


def test_iter_media_pages_through_everything(client: StreamClient, emulator: Emulator):
    created = [client.create_media(_request(f"Track {n}")).id for n in range(5)]
    before = len(emulator.requests)

    seen = [m.id for m in client.iter_media(page_size=2)]

    assert seen == created
    assert len([r for r in emulator.requests[before:] if r.path == "/api/media"]) == 3


def test_find_by_metadata_checks_every_candidate_itself_on_every_page(emulator_factory):
    emulator = emulator_factory(faults=Faults(ignored_list_filters=frozenset({"metadata"})))
    with StreamClient(emulator.base_url, token=TOKEN) as client:
        for n in range(120):
            client.create_media(_request(f"Other {n}", metadata=_metadata(ingestd_job=f"job-{n}")))
        mine = client.create_media(_request("Mine", metadata=_metadata(ingestd_job="job-x")))
        found = client.find_by_metadata("ingestd_job", "job-x")
    assert [m.id for m in found] == [mine.id]
    assert len([r for r in emulator.requests if r.path == "/api/media"]) == 2  # pages of 100


def test_find_by_metadata_falls_back_to_a_title_search_when_the_filter_is_refused(emulator_factory):
    emulator = emulator_factory(faults=Faults(refused_list_filters=frozenset({"metadata"})))
    with StreamClient(emulator.base_url, token=TOKEN) as client:
        mine = client.create_media(_request("Morning show", metadata=_metadata(ingestd_job="job-x")))
        client.create_media(_request("Morning show", metadata=_metadata(ingestd_job="job-y")))
        with pytest.raises(RejectedError):
            client.find_by_metadata("ingestd_job", "job-x")
        found = client.find_by_metadata("ingestd_job", "job-x", title="Morning show")
    assert [m.id for m in found] == [mine.id]


def test_credentials_work_tells_a_forbidden_action_from_bad_credentials(emulator_factory):
    emulator = emulator_factory(faults=Faults(forbidden=frozenset({"delete"})), bad_credentials_status=403)
    with StreamClient(emulator.base_url, token=TOKEN) as client:
        media = client.create_media(_request())
        with pytest.raises(AuthError) as caught:
            client.delete_media(media.id)
        assert caught.value.status_code == 403
        assert client.credentials_work()
    with StreamClient(emulator.base_url, token="wrong-token") as client:
        assert not client.credentials_work()


def test_find_by_metadata_skips_deleted_media_and_other_values(client: StreamClient):
    keep = [client.create_media(_request(metadata=_metadata(checksum="abc", n=str(n)))).id for n in range(3)]
    gone = client.create_media(_request(metadata=_metadata(checksum="abc")))
    client.delete_media(gone.id)
    client.create_media(_request(metadata=_metadata(checksum="abd")))

    found = client.find_by_metadata("checksum", "abc")

    assert sorted(m.id for m in found) == sorted(keep)


# --- transient failures --------------------------------------------------------------


def test_over_the_rate_limit_raises_with_retry_after(emulator_factory):
    emulator = emulator_factory(rate_limit_per_minute=2)
    with StreamClient(emulator.base_url, token=TOKEN) as client:
        client.media_cost(["standard"], 60)
        assert client.rate_limit.limit == 2
        client.media_cost(["standard"], 60)
        with pytest.raises(RateLimitedError) as caught:
            client.media_cost(["standard"], 60)
    error = caught.value
    assert error.status_code == 429
    assert 0 < error.retry_after <= 60
    assert client.rate_limit.remaining == 0
    assert client.rate_limit.retry_after == error.retry_after


def test_a_500_is_a_server_error(client: StreamClient, emulator: Emulator):
    emulator.settings.faults.server_error = 1.0
    with pytest.raises(ServerError) as caught:
        client.create_media(_request())
    assert (caught.value.status_code, caught.value.method) == (500, "POST")
    assert emulator.all_media() == []


def test_a_dropped_connection_is_a_connection_error_though_the_request_took_effect(client: StreamClient, emulator: Emulator):
    emulator.settings.faults.drop_after_commit = 1.0
    with pytest.raises(APIConnectionError) as caught:
        client.create_media(_request("Committed"))
    assert caught.value.status_code is None
    assert [m["title"] for m in emulator.all_media()] == ["Committed"]


def test_a_slow_answer_times_out_as_a_connection_error(emulator_factory):
    emulator = emulator_factory(faults=Faults(slow=1.0, slow_seconds=1.0))
    with StreamClient(emulator.base_url, token=TOKEN, timeout=0.2) as client:
        with pytest.raises(APIConnectionError, match="timed out"):
            client.get_media("0" * 32)


def test_a_closed_port_is_a_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with StreamClient(f"http://127.0.0.1:{port}/api", token=TOKEN, timeout=2) as client:
        with pytest.raises(APIConnectionError) as caught:
            client.list_media()
    assert (caught.value.method, caught.value.path) == ("POST", "/media")


# --- answers only the live service gives ---------------------------------------------


def _media_json(media_id: str = "m1", **fields) -> dict:
    return {"id": media_id, "title": "t", "status": "new", "brand_new_field": 1} | fields


def test_items_listed_under_media_and_a_200_on_create_are_accepted():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["user-agent"] == f"ingestd/{__version__}"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        if request.url.path == "/api/media/create":
            return httpx.Response(200, json={"status": "success", "data": _media_json("m9")})
        sent = json.loads(request.content)
        assert (sent["offset"], sent["limit"], sent["type"]) == (0, 25, "audio")
        return httpx.Response(200, json={"status": "success", "data": {"media": [_media_json("m1")], "total": 1}},
                              headers={"content-type": "application/json"})

    with _mock_client(handler) as client:
        assert client.create_media(_request()).id == "m9"
        page = client.list_media()
    assert [m.id for m in page.items] == ["m1"] and page.total == 1


def test_answers_with_a_charset_and_problem_details_errors_are_understood():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, content=json.dumps({"status": "success", "data": _media_json("m2")}).encode(),
                                  headers={"content-type": "application/json; charset=utf-8"})
        return httpx.Response(400, json={"type": "about:blank", "title": "Bad Request", "status": 400,
                                         "detail": "title: must not be empty"})

    with _mock_client(handler) as client:
        assert client.get_media("m2").id == "m2"
        with pytest.raises(RejectedError) as caught:
            client.create_media(_request())
    assert caught.value.message == "title: must not be empty"


def test_a_plain_retry_after_header_is_honoured():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"status": "error", "message": "slow down"}, headers={"Retry-After": "7"})

    with _mock_client(handler) as client, pytest.raises(RateLimitedError) as caught:
        client.get_media("m1")
    assert (caught.value.retry_after, caught.value.message) == (7.0, "slow down")


@pytest.mark.parametrize(("status", "encoding"), [(200, None), (500, None), (200, "gzip")])
def test_an_answer_larger_than_any_the_api_gives_is_refused_as_it_arrives(status, encoding):
    # No answer of the API comes near 16 MiB (a page of 100 media is some 200 KiB); a broken proxy or a hostile
    # server sending on and on (or a small gzip that inflates to 40 MiB) was read whole into the daemon's memory.
    def body():
        yield b'{"status": "success", "data": {"id": "m1", "title": "'
        for _ in range(40):
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    def handler(request: httpx.Request) -> httpx.Response:
        if encoding == "gzip":
            packed = gzip.compress(b"".join(body()))
            return httpx.Response(status, content=packed, headers={"Content-Encoding": "gzip"})
        return httpx.Response(status, content=body())

    with _mock_client(handler) as client, pytest.raises(ServerError, match=r"^GET /media/m1: unexpected answer: larger than 16 MiB"):
        client.get_media("m1")


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("value", ["inf", "1e20", "86400000", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_wait_asked_for_past_a_day_is_a_day(status, value):
    # A daily quota is the longest wait an API means; "inf" or a date in the year 9999 left the job waiting for ever.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"status": "error", "message": "later"}, headers={"Retry-After": value})

    with _mock_client(handler) as client, pytest.raises(TransientError) as caught:
        client.get_media("m1")
    assert caught.value.retry_after == 86400.0


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(408, ServerError), (502, ServerError), (403, AuthError), (409, RejectedError), (413, RejectedError)],
)
def test_statuses_map_onto_error_classes(status: int, error_class: type):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="<html>upstream trouble</html>", headers={"content-type": "text/html"})

    with _mock_client(handler) as client, pytest.raises(error_class) as caught:
        client.delete_media("m1")
    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert "upstream trouble" in caught.value.message


def test_a_2xx_that_is_not_json_is_a_server_error():
    with _mock_client(lambda request: httpx.Response(200, text="maintenance")) as client:
        with pytest.raises(ServerError, match="not JSON"):
            client.get_media("m1")


def test_an_empty_2xx_is_fine_where_no_data_is_expected():
    with _mock_client(lambda request: httpx.Response(204)) as client:
        client.delete_media("m1")
        with pytest.raises(ServerError, match="unexpected answer"):
            client.get_media("m1")


class _Trickler(socketserver.BaseRequestHandler):
    """Answers slowly but never stalls: each byte comes well within the read timeout."""

    headers_too = False

    def handle(self) -> None:
        self.request.recv(65536)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        if not self.headers_too:
            self.request.sendall(head)
            head = b""
        try:
            for byte in head + b" " * 1000:
                self.request.sendall(bytes([byte]))
                time.sleep(0.3)
        except OSError:
            pass  # the client gave up, as it should


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_trickling_answer_hits_the_overall_deadline_and_counts_as_transient(headers_too):
    handler = type("Handler", (_Trickler,), {"headers_too": headers_too})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with StreamClient(f"http://127.0.0.1:{server.server_address[1]}", token=TOKEN, timeout=1) as client:
            with pytest.raises(TransientError) as caught:
                client.get_media("m1")
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(caught.value, APIConnectionError)
    assert "no complete answer within 3s" in str(caught.value)


def test_a_plain_http_client_loads_no_certificates_and_https_still_verifies(monkeypatch):
    # Loading the CA bundle costs a tenth of a second on every start of `ingestd upload`, for nothing over http.
    loaded: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self, *args, **kwargs):
        loaded.append(args or kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    StreamClient("http://127.0.0.1:9/api", token="test-token").close()
    assert loaded == []
    StreamClient("https://127.0.0.1:9/api", token="test-token").close()
    assert loaded, "an https client checks the server's certificate"
