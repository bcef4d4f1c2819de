"""A schema-driven fuzz of the emulator's eight endpoints: requests drawn from the API's schema and around it.

The schema below is the contract written as JSON Schema (the forms AIOZ's official clients send, and the
seed's validation rules). A request the schema allows must succeed with the endpoint's success status; one
it does not allow must get a 400. Every answer, either way, must be in the contract's shape: never a 5xx,
``Content-Type: application/json`` exactly, the rate-limit headers, and the documented body.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.emulator import Emulator
from ingestd.emulator._settings import DEFAULT_RATES
from ingestd.models import Media

from .conftest import fast_settings

AUTH = {"Authorization": "Bearer test-token"}
SHORT = {"type": "string", "maxLength": 255}
METADATA = {"type": "array", "maxItems": 50, "items": {
    "type": "object", "required": ["key", "value"], "additionalProperties": False, "properties": {"key": SHORT, "value": SHORT}}}
TAGS = {"type": "array", "maxItems": 50, "items": SHORT}
AUDIO_CONFIG = {"type": "object", "required": ["codec", "bitrate", "channels", "sample_rate"], "additionalProperties": False,
                "properties": {"codec": {"const": "aac"}, "bitrate": {"type": "integer", "minimum": 1}, "channels": {"const": "2"},
                               "sample_rate": {"enum": [8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000]},
                               "language": {"enum": ["en", "es", "ja", "pt-BR", "zh-Hant-TW"]},
                               "index": {"type": "integer", "minimum": 0}}}
# The container must fit the type: hls → mpegts | mp4, dash → fmp4.
QUALITY = {"oneOf": [
    {"type": "object", "required": ["resolution", "type", "container_type", "audio_config"], "additionalProperties": False,
     "properties": {"resolution": {"enum": ["standard", "good", "highest", "lossless"]}, "type": {"const": kind},
                    "container_type": {"enum": containers}, "audio_config": AUDIO_CONFIG}}
    for kind, containers in (("hls", ["mpegts", "mp4"]), ("dash", ["fmp4"]))]}
MEDIA_FIELDS = {"title": {"type": "string", "minLength": 1, "maxLength": 255}, "description": {"type": "string", "maxLength": 1000},
                "is_public": {"type": "boolean"}, "metadata": METADATA, "tags": TAGS}
SCHEMA: dict[str, dict[str, Any]] = {
    "create": {"type": "object", "required": ["title"], "additionalProperties": False, "properties": MEDIA_FIELDS | {
        "type": {"enum": ["audio", "video"]}, "qualities": {"type": "array", "maxItems": 4, "items": QUALITY}}},
    "update": {"type": "object", "additionalProperties": False, "properties": MEDIA_FIELDS | {"player_id": {"type": "string"}}},
    "list": {"type": "object", "additionalProperties": False, "properties": {
        "offset": {"type": "integer", "minimum": 0}, "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "sort_by": {"enum": ["created_at", "updated_at", "title", "size"]}, "order_by": {"enum": ["asc", "desc"]},
        "type": {"enum": ["audio", "video"]}, "search": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "array", "items": {"enum": ["new", "transcoding", "done", "fail", "deleted"]}}, "metadata": METADATA}},
    # A query string: unknown parameters are ignored, as web services do.
    "cost": {"type": "object", "required": ["qualities", "type", "duration"], "properties": {
        "qualities": {"type": "array", "minItems": 1, "items": {"enum": sorted(DEFAULT_RATES)}},
        "type": {"const": "audio"}, "duration": {"type": "number", "exclusiveMinimum": 0}}},
}
# JSON Schema counts 1.0 as an integer; the service's Go types do not.
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)
SUCCESS = {"create": 201, "list": 200, "update": 200, "cost": 200, "get": 200, "delete": 200, "part": 200, "complete": 200}
MESSAGE_ONLY = {"update", "delete", "part", "complete"}


def allowed(endpoint: str, body: Any) -> bool:
    if isinstance(body, dict):
        # A known field given as null is an absent one, as a Go service decodes it.
        body = {k: v for k, v in body.items() if v is not None or k not in SCHEMA[endpoint]["properties"]}
    if not _Validator(SCHEMA[endpoint]).is_valid(body):
        return False
    if endpoint != "create":
        return True
    resolutions = [q["resolution"] for q in body.get("qualities") or ()]
    return len(resolutions) == len(set(resolutions))  # unique within a request, which JSON Schema cannot say


def check_answer(endpoint: str, response: httpx.Response) -> dict[str, Any]:
    """Everything the contract says of an answer, whatever the request was."""
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-retry-after"):
        assert response.headers[name].isdigit(), name
    payload = response.json()
    if response.status_code >= 400:
        assert set(payload) == {"status", "message"} and payload["status"] == "error", payload
        assert isinstance(payload["message"], str) and payload["message"]
        return payload
    assert response.status_code == SUCCESS[endpoint] and payload["status"] == "success", payload
    if endpoint in MESSAGE_ONLY:
        assert set(payload) == {"status", "message"} and isinstance(payload["message"], str)
    elif endpoint in ("create", "get"):
        media = Media.model_validate(payload["data"])
        assert media.id and media.status in ("new", "transcoding", "done", "fail") and media.assets is not None
    elif endpoint == "list":
        data = payload["data"]
        assert data["videos"] == data["media"] and isinstance(data["total"], int) and data["total"] >= len(data["videos"])
        for item in data["videos"]:
            Media.model_validate(item)
    else:
        data = payload["data"]
        assert isinstance(data["is_enough"], bool) and isinstance(data["price"], (int, float)) and data["price"] >= 0
    return payload


def _unique_resolutions(body: dict[str, Any]) -> dict[str, Any]:
    if "qualities" in body:
        seen: dict[str, Any] = {}
        for quality in body["qualities"]:
            seen.setdefault(quality["resolution"], quality)
        body = body | {"qualities": list(seen.values())}
    return body


json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=12)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema allows, for the parts of JSON Schema used above (arrays kept short)."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "oneOf" in schema:
        return st.one_of([from_schema(choice) for choice in schema["oneOf"]])
    kind = schema["type"]
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 40))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        low = schema.get("exclusiveMinimum", schema.get("minimum"))
        return st.floats(min_value=low, max_value=schema.get("maximum"), exclude_min="exclusiveMinimum" in schema,
                         allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 4), 4))
    properties = {name: from_schema(sub) for name, sub in schema["properties"].items()}
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries({n: s for n, s in properties.items() if n in required},
                                 optional={n: s for n, s in properties.items() if n not in required})


def around(endpoint: str) -> st.SearchStrategy[Any]:
    """Bodies the schema allows, those bodies with one field broken, and anything at all."""
    valid = from_schema(SCHEMA[endpoint])
    if endpoint == "create":
        valid = valid.map(_unique_resolutions)
    names = sorted(SCHEMA[endpoint]["properties"])
    broken = st.builds(lambda body, name, value: body | {name: value}, valid, st.sampled_from(names + ["unknown"]), json_values)
    return st.one_of(valid, valid, broken, json_values)


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[httpx.Client]:
    with Emulator(fast_settings(), data_dir=tmp_path_factory.mktemp("contract-fuzz")) as emulator:
        with httpx.Client(base_url=emulator.base_url, headers=AUTH, timeout=10) as client:
            yield client


@pytest.fixture(scope="module")
def media_id(api: httpx.Client) -> str:
    return api.post("/media/create", json={"title": "fuzzed", "type": "audio"}).json()["data"]["id"]


FUZZ = settings(max_examples=int(os.environ.get("INGESTD_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(body=around("create"))
def test_create(api, body):
    check_answer("create", response := api.post("/media/create", json=body))
    assert response.status_code == (201 if allowed("create", body) else 400), (body, response.text)


@FUZZ
@given(body=around("list"))
def test_list(api, body):
    check_answer("list", response := api.post("/media", json=body))
    assert response.status_code == (200 if allowed("list", body) else 400), (body, response.text)


@FUZZ
@given(body=around("update"))
def test_update(api, media_id, body):
    check_answer("update", response := api.patch(f"/media/{media_id}", json=body))
    assert response.status_code == (200 if allowed("update", body) else 400), (body, response.text)


def _query(params: Any) -> dict[str, str]:
    if not isinstance(params, dict):
        return {"x": str(params)}
    return {str(k): ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in params.items()}


def _as_read(query: dict[str, str]) -> dict[str, Any]:
    """The query as the service reads it back into typed values, to be checked against the schema."""
    read: dict[str, Any] = dict(query)
    if "qualities" in query:
        read["qualities"] = [name.strip() for name in query["qualities"].split(",")]
    try:
        read["duration"] = float(query.get("duration", ""))
    except ValueError:
        pass
    if not math.isfinite(read.get("duration", 0) if isinstance(read.get("duration"), float) else 0):
        read["duration"] = None
    return read


@FUZZ
@given(params=around("cost"))
def test_cost(api, params):
    query = _query(params)
    check_answer("cost", response := api.get("/media/cost", params=query))
    assert response.status_code == (200 if allowed("cost", _as_read(query)) else 400), (params, response.text)


ids = st.one_of(st.just("mine"), st.builds(lambda: str(uuid.uuid4())), st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe=""))
                .filter(lambda s: s not in (".", "..", "create", "cost")))  # those name other paths


@FUZZ
@given(which=ids, endpoint=st.sampled_from(["get", "complete", "delete"]))
def test_get_complete_and_delete(api, which, endpoint):
    target = api.post("/media/create", json={"title": "target", "type": "audio"}).json()["data"]["id"] if which == "mine" else which
    method, suffix = {"get": ("GET", ""), "complete": ("GET", "/complete"), "delete": ("DELETE", "")}[endpoint]
    response = api.request(method, f"/media/{target}{suffix}")
    check_answer(endpoint, response)
    if which != "mine":
        assert response.status_code == 404
    else:
        # A fresh media: found, deletable, and not completable before any part.
        assert response.status_code == {"get": 200, "delete": 200, "complete": 400}[endpoint], response.text


@st.composite
def parts(draw) -> tuple[bool, dict[str, str], list[tuple[str, Any]]]:
    """A part request, well-formed in one of the official forms or broken in one respect."""
    data = draw(st.binary(min_size=1, max_size=3000))
    md5 = hashlib.md5(data).hexdigest()
    form = draw(st.sampled_from(["bytes", "progressive", "single"]))
    headers = {"bytes": {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}, "progressive": {"Content-Range": "part 1/1"},
               "single": {}}[form]
    file_name = draw(st.sampled_from(["file", "take.wav"])) if form == "progressive" else "file"
    fields = [(file_name, ("take.wav", data))] + ([] if form == "progressive" else [("index", (None, b"1")), ("hash", (None, md5.encode()))])
    fields = draw(st.permutations(fields))
    broken = draw(st.sampled_from([None, "index", "hash", "range", "no file"]))
    if broken == "index":
        fields = [(n, (None, draw(st.sampled_from([b"0", b"-1", b"x", b"", b"2"])))) if n == "index" else (n, v) for n, v in fields]
        if form == "progressive":
            fields.append(("index", (None, b"2")))
    elif broken == "hash":
        fields = [(n, v) for n, v in fields if n != "hash"] + [("hash", (None, draw(st.sampled_from([b"", b"abc", b"0" * 32]))))]
    elif broken == "range":
        headers = {"Content-Range": draw(st.sampled_from(["bytes 0-0/0", f"bytes 0-{len(data)}/{len(data)}", f"bytes 0-{len(data)}/{len(data) + 1}", "part 0/*", "part 2/3", "bytes=0-1/2"]))}
    elif broken == "no file":
        fields = [(n, v) for n, v in fields if v[0] is None] + [("note", (None, b"no file here"))]
    return broken is None, headers, fields


@FUZZ
@given(part=parts())
def test_part(api, part):
    ok, headers, fields = part
    media = api.post("/media/create", json={"title": "part target", "type": "audio"}).json()["data"]["id"]
    response = api.post(f"/media/{media}/part", headers=headers, files=fields)
    check_answer("part", response)
    assert response.status_code == (200 if ok else 400), (headers, [(n, v[0]) for n, v in fields], response.text)
