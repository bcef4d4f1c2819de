"""The emulator over real loopback HTTP: every endpoint, its validation, auth, limits and faults."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ingestd.emulator import Account, Emulator, EmulatorSettings, Faults
from tests.audio import write_wav, write_wav_of_size
from tests.conftest import TEST_MIN_PART_SIZE, fast_settings

AUTH = {"Authorization": "Bearer test-token"}
QUALITY = {
    "resolution": "standard",
    "type": "hls",
    "container_type": "mpegts",
    "audio_config": {"codec": "aac", "bitrate": 128000, "channels": "2", "sample_rate": 44100, "language": "en", "index": 0},
}


@pytest.fixture
def emulator(emulator_factory) -> Emulator:
    """Lenient, as the service is: these tests also cover forms only the seed's examples use (index 0, maps)."""
    return emulator_factory(strict_official=False)


@pytest.fixture
def client(emulator: Emulator):
    with httpx.Client(base_url=emulator.base_url, headers=AUTH, timeout=10) as c:
        yield c


def create(client: httpx.Client, **fields) -> str:
    response = client.post("/media/create", json={"type": "audio", "title": "A title"} | fields)
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def send_part(client: httpx.Client, media_id: str, data: bytes, index: int, content_range: str, digest: str | None = None) -> httpx.Response:
    return client.post(
        f"/media/{media_id}/part",
        headers={"Content-Range": content_range},
        data={"index": str(index), "hash": digest or hashlib.md5(data).hexdigest()},
        files={"file": ("part", data)},
    )


def upload(client: httpx.Client, media_id: str, data: bytes, chunk: int = TEST_MIN_PART_SIZE, base: int = 1) -> None:
    for number, start in enumerate(range(0, len(data), chunk)):
        piece = data[start : start + chunk]
        response = send_part(client, media_id, piece, base + number, f"bytes {start}-{start + len(piece) - 1}/{len(data)}")
        assert response.status_code == 200, response.text


def wait_for_status(client: httpx.Client, media_id: str, wanted: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        media = client.get(f"/media/{media_id}").json()["data"]
        if media["status"] == wanted or time.monotonic() > deadline:
            assert media["status"] == wanted
            return media
        time.sleep(0.02)


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    return write_wav_of_size(tmp_path / "tone.wav", 3 * TEST_MIN_PART_SIZE + 1000).read_bytes()


# -- create ---------------------------------------------------------------


def test_create_answers_201_with_new_media(client: httpx.Client, emulator: Emulator):
    response = client.post("/media/create", json={"type": "audio", "title": "Episode", "qualities": [QUALITY], "tags": ["a"]})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"  # exactly: the Node client refuses parameters
    media = response.json()["data"]
    assert media["status"] == "new"
    assert media["qualities"] == [{"name": "standard", "status": "new", "type": "hls"}]
    assert media["tags"] == ["a"]
    assert "mp4_url" not in media["assets"]
    assert media["assets"]["hls_url"].startswith(emulator.base_url)
    assert [m["id"] for m in emulator.all_media()] == [media["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "movie", "title": "t"}, "type"),
        ({"type": "audio"}, "title"),
        ({"type": "audio", "title": ""}, "title"),
        ({"type": "audio", "title": "x" * 256}, "title"),
        ({"type": "audio", "title": "t", "description": "x" * 1001}, "description"),
        ({"type": "audio", "title": "t", "tags": ["x"] * 51}, "tags"),
        ({"type": "audio", "title": "t", "metadata": [{"key": "k"}]}, "metadata[0].value"),
        ({"type": "audio", "title": "t", "qualities": [QUALITY, QUALITY]}, "qualities"),
        ({"type": "audio", "title": "t", "qualities": [QUALITY | {"container_type": "fmp4"}]}, "qualities[0]"),
        ({"type": "audio", "title": "t", "qualities": [QUALITY, QUALITY | {"resolution": "good", "audio_config": QUALITY["audio_config"] | {"sample_rate": 44000}}]}, "qualities[1].audio_config.sample_rate"),
        ({"type": "audio", "title": "t", "qualities": [QUALITY | {"audio_config": QUALITY["audio_config"] | {"channels": 2}}]}, "qualities[0].audio_config.channels"),
        ({"type": "audio", "title": "t", "qualities": [QUALITY | {"audio_config": QUALITY["audio_config"] | {"language": "english!"}}]}, "qualities[0].audio_config.language"),
    ],
)
def test_create_rejects_invalid_fields_naming_them(client: httpx.Client, body: dict, field: str):
    response = client.post("/media/create", json=body)
    assert response.status_code == 400
    assert response.json()["status"] == "error"
    assert field in response.json()["message"]


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"\xff\xfe", b'"text"'])
def test_create_rejects_malformed_json_with_400(client: httpx.Client, raw: bytes):
    response = client.post("/media/create", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["status"] == "error"


# -- upload and complete --------------------------------------------------


def test_full_upload_assembles_file_and_transcodes_to_done(client: httpx.Client, emulator: Emulator, wav: bytes):
    media_id = create(client, qualities=[QUALITY])
    upload(client, media_id, wav)
    response = client.get(f"/media/{media_id}/complete")
    assert response.status_code == 200
    assert response.json() == {"status": "success", "message": "Upload completed successfully."}
    media = client.get(f"/media/{media_id}").json()["data"]
    assert media["status"] == "transcoding"
    assert media["size"] == len(wav)
    done = wait_for_status(client, media_id, "done")
    assert done["qualities"][0]["status"] == "done"
    assert done["duration"] == pytest.approx(len(wav) / (44100 * 4), abs=0.05)
    assert emulator.media_file(media_id).read_bytes() == wav


def test_undecodable_upload_ends_in_fail(client: httpx.Client, emulator: Emulator):
    media_id = create(client)
    upload(client, media_id, b"not audio at all" * 100)
    assert client.get(f"/media/{media_id}/complete").status_code == 200
    assert wait_for_status(client, media_id, "fail")["status"] == "fail"


def test_second_complete_is_refused(client: httpx.Client, wav: bytes):
    media_id = create(client)
    upload(client, media_id, wav)
    assert client.get(f"/media/{media_id}/complete").status_code == 200
    again = client.get(f"/media/{media_id}/complete")
    assert again.status_code == 400
    assert again.json()["message"] == "upload already completed"
    late = send_part(client, media_id, wav[:100], 0, f"bytes 0-99/{len(wav)}")
    assert late.status_code == 400


def test_complete_names_the_gap(client: httpx.Client, wav: bytes):
    media_id = create(client)
    chunk = TEST_MIN_PART_SIZE
    total = len(wav)
    for number in (0, 2, 3):
        start = number * chunk
        piece = wav[start : start + chunk]
        assert send_part(client, media_id, piece, number, f"bytes {start}-{start + len(piece) - 1}/{total}").status_code == 200
    response = client.get(f"/media/{media_id}/complete")
    assert response.status_code == 400
    assert f"bytes {chunk}-{2 * chunk - 1} are missing" in response.json()["message"]


def test_complete_without_parts_is_refused(client: httpx.Client):
    response = client.get(f"/media/{create(client)}/complete")
    assert response.status_code == 400
    assert "no parts" in response.json()["message"]


def test_parts_out_of_order_and_in_parallel(client: httpx.Client, emulator: Emulator, wav: bytes):
    media_id = create(client)
    chunk = TEST_MIN_PART_SIZE
    starts = list(range(0, len(wav), chunk))[::-1]

    def one(start: int) -> int:
        piece = wav[start : start + chunk]
        return send_part(client, media_id, piece, start // chunk, f"bytes {start}-{start + len(piece) - 1}/{len(wav)}").status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, starts)) == [200] * len(starts)
    assert client.get(f"/media/{media_id}/complete").status_code == 200
    assert emulator.media_file(media_id).read_bytes() == wav


def test_resent_index_replaces_the_earlier_part(client: httpx.Client, emulator: Emulator, wav: bytes):
    media_id = create(client)
    chunk = TEST_MIN_PART_SIZE
    garbage = bytes(chunk)
    assert send_part(client, media_id, garbage, 1, f"bytes 0-{chunk - 1}/{len(wav)}").status_code == 200
    upload(client, media_id, wav)
    assert client.get(f"/media/{media_id}/complete").status_code == 200
    assert emulator.media_file(media_id).read_bytes() == wav


def test_zero_based_indexes_are_accepted_when_not_strict(client: httpx.Client, emulator: Emulator, wav: bytes):
    media_id = create(client)
    upload(client, media_id, wav, base=0)
    assert client.get(f"/media/{media_id}/complete").status_code == 200
    assert emulator.media_file(media_id).read_bytes() == wav


def test_mixed_index_bases_are_refused(client: httpx.Client, wav: bytes):
    media_id = create(client)
    chunk = TEST_MIN_PART_SIZE
    assert send_part(client, media_id, wav[:chunk], 1, f"bytes 0-{chunk - 1}/{len(wav)}").status_code == 200
    response = send_part(client, media_id, wav[chunk : 2 * chunk], 0, f"bytes {chunk}-{2 * chunk - 1}/{len(wav)}")
    assert response.status_code == 400
    assert "numbered from 1" in response.json()["message"]


def test_official_client_part_ranges(client: httpx.Client, emulator: Emulator, wav: bytes):
    media_id = create(client)
    chunk = TEST_MIN_PART_SIZE
    pieces = [wav[i : i + chunk] for i in range(0, len(wav), chunk)]
    for number, piece in enumerate(pieces, start=1):
        last = number == len(pieces)
        content_range = f"part {number}/{number}" if last else f"part {number}/*"
        assert send_part(client, media_id, piece, number, content_range).status_code == 200
    assert client.get(f"/media/{media_id}/complete").status_code == 200
    assert emulator.media_file(media_id).read_bytes() == wav


@pytest.mark.parametrize(
    ("content_range", "message"),
    [
        ("bytes=0-99/100", "invalid Content-Range"),
        ("bytes 50-10/100", "invalid Content-Range"),
        ("bytes 0-99/50", "invalid Content-Range"),
        ("part 2/3", "invalid Content-Range"),
    ],
)
def test_part_rejects_bad_content_range(client: httpx.Client, content_range: str | None, message: str):
    media_id = create(client)
    headers = {"Content-Range": content_range} if content_range else {}
    data = b"x" * 100
    response = client.post(f"/media/{media_id}/part", headers=headers, data={"index": "0", "hash": hashlib.md5(data).hexdigest()}, files={"file": ("p", data)})
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_part_byte_count_must_match_range(client: httpx.Client):
    media_id = create(client)
    response = send_part(client, media_id, b"x" * 90, 0, "bytes 0-99/100")
    assert response.status_code == 400
    assert "90 bytes" in response.json()["message"]


def test_part_hash_mismatch(client: httpx.Client):
    media_id = create(client)
    response = send_part(client, media_id, b"x" * 100, 0, "bytes 0-99/100", digest=hashlib.md5(b"other").hexdigest())
    assert response.status_code == 400
    assert response.json()["message"] == "hash mismatch"


def test_part_total_must_stay_the_same(client: httpx.Client, wav: bytes):
    media_id = create(client)
    chunk = TEST_MIN_PART_SIZE
    assert send_part(client, media_id, wav[:chunk], 0, f"bytes 0-{chunk - 1}/{len(wav)}").status_code == 200
    response = send_part(client, media_id, wav[chunk : 2 * chunk], 1, f"bytes {chunk}-{2 * chunk - 1}/{len(wav) + 1}")
    assert response.status_code == 400
    assert "differs" in response.json()["message"]


def test_short_non_final_part_is_refused(client: httpx.Client):
    media_id = create(client)
    response = send_part(client, media_id, b"x" * 1000, 0, f"bytes 0-999/{10 * TEST_MIN_PART_SIZE}")
    assert response.status_code == 400
    assert "smaller than the minimum" in response.json()["message"]


@pytest.mark.parametrize("missing", ["file", "index", "hash"])
def test_part_requires_each_field(client: httpx.Client, missing: str):
    media_id = create(client)
    data = b"x" * 100
    fields = {"index": "0", "hash": hashlib.md5(data).hexdigest()}
    fields.pop(missing, None)
    files = {} if missing == "file" else {"file": ("p", data)}
    if not files:
        files = {"other": (None, b"no file name, so not the file")}
    response = client.post(f"/media/{media_id}/part", headers={"Content-Range": "bytes 0-99/100"}, data=fields, files=files)
    assert response.status_code == 400
    assert response.json()["message"].startswith(missing)


def test_unknown_and_malformed_ids_are_404(client: httpx.Client):
    for media_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "%20"):
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/complete")):
            response = client.request(method, f"/media/{media_id}{suffix}", json={} if method == "PATCH" else None)
            assert response.status_code == 404, (method, media_id)
    assert send_part(client, "00000000-0000-0000-0000-000000000000", b"x", 0, "bytes 0-0/1").status_code == 404


# -- list -----------------------------------------------------------------


def test_list_filters_sorts_and_pages(client: httpx.Client):
    first = create(client, title="Morning news", tags=["news", "daily"], metadata=[{"key": "genre", "value": "talk"}])
    second = create(client, title="Jazz hour", description="Evening NEWS roundup", tags=["music"])
    third = create(client, title="Another", tags=["news"], metadata=[{"key": "genre", "value": "music"}])

    def ids(**body) -> list[str]:
        response = client.post("/media", json=body)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["videos"] == data["media"]
        return [m["id"] for m in data["videos"]]

    assert ids() == [first, second, third]
    assert ids(order_by="desc") == [third, second, first]
    assert ids(sort_by="title") == [third, second, first]
    assert ids(search="news") == [first, second]
    assert ids(tags="news,daily") == [first]
    assert ids(tags=["news"]) == [first, third]
    assert ids(metadata={"genre": "music"}) == [third]
    assert ids(metadata=[{"key": "genre", "value": "talk"}]) == [first]
    assert ids(type="audio", status=["new"], limit=1, offset=1) == [second]
    assert client.post("/media", json={"limit": 2}).json()["data"]["total"] == 3


@pytest.mark.parametrize(
    "body",
    [{"limit": 0}, {"limit": 101}, {"limit": "5"}, {"offset": -1}, {"sort_by": "duration"}, {"order_by": "up"}, {"status": "gone"}, {"type": "image"}, {"tags": 5}, {"metadata": "x"}, {"bogus": 1}, [1]],
)
def test_list_rejects_bad_parameters(client: httpx.Client, body):
    response = client.post("/media", json=body)
    assert response.status_code == 400
    assert response.json()["status"] == "error"


# -- cost -----------------------------------------------------------------


def test_cost_prices_presets_against_balance(client: httpx.Client, emulator: Emulator):
    response = client.get("/media/cost", params={"qualities": "good,highest", "type": "audio", "duration": "120"})
    assert response.status_code == 200
    assert response.json() == {"status": "success", "data": {"price": pytest.approx(0.06), "is_enough": True}}
    emulator.settings.accounts[0].balance_usd = 0.01
    assert client.get("/media/cost", params={"qualities": "good", "type": "audio", "duration": "120"}).json()["data"]["is_enough"] is False


@pytest.mark.parametrize(
    "params",
    [
        {"qualities": "ultra", "type": "audio", "duration": "60"},
        {"qualities": "", "type": "audio", "duration": "60"},
        {"qualities": "good", "type": "video", "duration": "60"},
        {"qualities": "good", "duration": "60"},
        {"qualities": "good", "type": "audio", "duration": "0"},
        {"qualities": "good", "type": "audio", "duration": "nan"},
        {"qualities": "good", "type": "audio"},
    ],
)
def test_cost_rejects_bad_query(client: httpx.Client, params: dict):
    response = client.get("/media/cost", params=params)
    assert response.status_code == 400


# -- update and delete ----------------------------------------------------


def test_update_changes_only_given_fields(client: httpx.Client):
    media_id = create(client, title="Before", description="kept")
    response = client.patch(f"/media/{media_id}", json={"title": "After", "tags": ["x"], "player_theme_id": "theme-1", "is_public": False})
    assert response.status_code == 200
    assert response.json() == {"status": "success", "message": "Update audio info successfully."}
    media = client.get(f"/media/{media_id}").json()["data"]
    assert (media["title"], media["description"], media["tags"], media["player_theme_id"], media["is_public"]) == ("After", "kept", ["x"], "theme-1", False)


@pytest.mark.parametrize("body", [{"title": ""}, {"tags": "x"}, {"is_public": "yes"}, {"metadata": [{"key": "k", "value": 1}]}, {"unknown": 1}])
def test_update_validates_like_create(client: httpx.Client, body: dict):
    media_id = create(client)
    response = client.patch(f"/media/{media_id}", json=body)
    assert response.status_code == 400
    assert next(iter(body)) in response.json()["message"]


def test_delete_is_soft_and_hides_the_media(client: httpx.Client, emulator: Emulator):
    media_id = create(client)
    response = client.delete(f"/media/{media_id}")
    assert response.status_code == 200
    assert response.json()["message"] == "Audio deleted successfully."
    assert client.get(f"/media/{media_id}").status_code == 404
    assert client.patch(f"/media/{media_id}", json={"title": "x"}).status_code == 404
    assert send_part(client, media_id, b"x", 0, "bytes 0-0/1").status_code == 404
    assert client.delete(f"/media/{media_id}").status_code == 404
    assert client.post("/media", json={}).json()["data"]["total"] == 0
    deleted = client.post("/media", json={"status": "deleted"}).json()["data"]["videos"]
    assert [m["id"] for m in deleted] == [media_id]
    assert emulator.all_media() == []
    assert emulator.all_media(include_deleted=True)[0]["status"] == "deleted"


# -- auth -----------------------------------------------------------------


def test_auth_modes(emulator: Emulator):
    basic = base64.b64encode(b"test-public:test-secret").decode()
    accepted = [AUTH, {"stream-public-key": "test-public", "stream-secret-key": "test-secret"}, {"Authorization": f"Basic {basic}"}]
    refused = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer wrong"},
        {"stream-public-key": "test-public", "stream-secret-key": ""},
        {"stream-public-key": "test-public", "stream-secret-key": "wrong"},
        {"Authorization": "Basic !!!"},
    ]
    for headers in accepted:
        assert httpx.post(f"{emulator.base_url}/media", json={}, headers=headers).status_code == 200, headers
    for headers in refused:
        response = httpx.post(f"{emulator.base_url}/media", json={}, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["status"] == "error"


def test_other_accounts_media_is_not_found(emulator_factory):
    emulator = emulator_factory(accounts=[Account(token="alice"), Account(token="bob", public_key="bob-pub", secret_key="bob-sec")])
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": "Bearer alice"}) as alice:
        media_id = create(alice)
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": "Bearer bob"}) as bob:
        assert bob.get(f"/media/{media_id}").status_code == 404
        assert bob.delete(f"/media/{media_id}").status_code == 404
        assert bob.post("/media", json={}).json()["data"]["total"] == 0
    assert len(emulator.all_media()) == 1


# -- rate limits and faults -----------------------------------------------


def test_rate_limit_headers_and_429(emulator_factory):
    emulator = emulator_factory(rate_limit_per_minute=3)
    with httpx.Client(base_url=emulator.base_url, headers=AUTH) as client:
        remaining = [client.post("/media", json={}).headers["X-RateLimit-Remaining"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        refused = client.post("/media", json={})
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert 1 <= int(refused.headers["X-RateLimit-Retry-After"]) <= 60


def test_every_response_carries_rate_limit_headers(client: httpx.Client):
    for response in (client.post("/media", json={}), client.get("/media/nope"), httpx.get(f"{client.base_url}media")):
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-retry-after"} <= set(response.headers)


def test_server_error_fault_answers_500_without_acting(emulator_factory):
    emulator = emulator_factory(faults=Faults(server_error=1.0))
    response = httpx.post(f"{emulator.base_url}/media/create", json={"type": "audio", "title": "t"}, headers=AUTH)
    assert response.status_code == 500
    assert emulator.all_media() == []


def test_rate_limited_fault_answers_429_with_retry_after(emulator_factory):
    emulator = emulator_factory(faults=Faults(rate_limited=1.0))
    response = httpx.post(f"{emulator.base_url}/media/create", json={"type": "audio", "title": "t"}, headers=AUTH)
    assert response.status_code == 429
    assert int(response.headers["X-RateLimit-Retry-After"]) >= 1
    assert emulator.all_media() == []


def test_drop_after_commit_creates_media_the_client_never_heard_of(emulator_factory):
    emulator = emulator_factory(faults=Faults(drop_after_commit=1.0))
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{emulator.base_url}/media/create", json={"type": "audio", "title": "lost answer"}, headers=AUTH)
    assert [m["title"] for m in emulator.all_media()] == ["lost answer"]
    assert emulator.requests[-1].dropped and emulator.requests[-1].status == 201


def test_slow_fault_delays_the_answer(emulator_factory):
    emulator = emulator_factory(faults=Faults(slow=1.0, slow_seconds=0.3))
    started = time.monotonic()
    assert httpx.post(f"{emulator.base_url}/media", json={}, headers=AUTH).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_transcode_fail_fault(emulator_factory, tmp_path: Path):
    emulator = emulator_factory(faults=Faults(transcode_fail=1.0))
    wav = write_wav(tmp_path / "short.wav", 0.5).read_bytes()
    with httpx.Client(base_url=emulator.base_url, headers=AUTH) as client:
        media_id = create(client)
        upload(client, media_id, wav)
        assert client.get(f"/media/{media_id}/complete").status_code == 200
        assert wait_for_status(client, media_id, "fail")["size"] == len(wav)


def test_faults_are_seeded_and_changeable_at_runtime(emulator_factory):
    def statuses(emulator: Emulator) -> list[int]:
        with httpx.Client(base_url=emulator.base_url, headers=AUTH) as client:
            return [client.post("/media", json={}).status_code for _ in range(20)]

    one = emulator_factory(faults=Faults(seed=7, server_error=0.5))
    two = emulator_factory(faults=Faults(seed=7, server_error=0.5))
    first = statuses(one)
    assert first == statuses(two)
    assert set(first) == {200, 500}
    one.settings.faults.server_error = 0.0
    assert set(statuses(one)) == {200}


def test_requests_are_recorded(client: httpx.Client, emulator: Emulator):
    media_id = create(client)
    client.get(f"/media/{media_id}")
    records = emulator.requests
    assert [(r.method, r.path, r.status, r.media_id) for r in records] == [
        ("POST", "/api/media/create", 201, media_id),
        ("GET", f"/api/media/{media_id}", 200, media_id),
    ]


def test_settings_defaults():
    settings = EmulatorSettings()
    assert settings.min_part_size == 5 * 1024 * 1024
    assert [a.token for a in settings.accounts] == ["test-token"]
    assert fast_settings().min_part_size == TEST_MIN_PART_SIZE
    assert json.dumps(settings.rates)
