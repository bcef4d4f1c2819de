import json

import pytest

from ingestd.media_schema import Quality
from ingestd.sidecar import Sidecar, SidecarError, find_sidecar, load_sidecar

INLINE_QUALITY = {
    "resolution": "highest",
    "type": "hls",
    "container_type": "mpegts",
    "audio_config": {"codec": "aac", "bitrate": 128000, "channels": "2", "sample_rate": 44100},
}


def test_find_sidecar_by_stem(tmp_path):
    audio = tmp_path / "show.ep1.mp3"
    audio.touch()
    assert find_sidecar(audio) is None
    (tmp_path / "show.ep1.yml").write_text("title: x\n")
    (tmp_path / "show.yaml").write_text("title: not this one\n")
    assert find_sidecar(audio) == tmp_path / "show.ep1.yml"


def test_two_sidecars_for_one_file_is_an_error(tmp_path):
    audio = tmp_path / "ep.mp3"
    (tmp_path / "ep.yaml").write_text("title: a\n")
    (tmp_path / "ep.json").write_text('{"title": "b"}')
    with pytest.raises(SidecarError, match="ep.yaml and ep.json both describe this file"):
        find_sidecar(audio)


def test_yaml_sidecar_with_every_key(tmp_path):
    path = tmp_path / "ep.yaml"
    path.write_text(
        "title: 1984\n"
        "description: Recorded live.\n"
        "tags: [live, 2026]\n"
        "metadata:\n"
        "  episode: 12\n"
        "  rating: 4.5\n"
        "  explicit: false\n"
        "is_public: false\n"
        "qualities: podcast\n"
    )
    assert load_sidecar(path) == Sidecar(
        title="1984",
        description="Recorded live.",
        tags=["live", "2026"],
        metadata={"episode": "12", "rating": "4.5", "explicit": "false"},
        is_public=False,
        qualities="podcast",
    )


def test_json_sidecar_with_inline_qualities(tmp_path):
    path = tmp_path / "ep.json"
    path.write_text(json.dumps({"title": "Pilot", "qualities": [INLINE_QUALITY]}))
    sidecar = load_sidecar(path)
    assert sidecar.title == "Pilot"
    assert sidecar.qualities == [Quality.model_validate(INLINE_QUALITY)]
    assert sidecar.tags is None and sidecar.is_public is None


def test_empty_yaml_sidecar_overrides_nothing(tmp_path):
    path = tmp_path / "ep.yaml"
    path.write_text("# nothing to change\n")
    assert load_sidecar(path) == Sidecar()


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = tmp_path / "ep.yaml"
    path.write_text("title: Pilot\n\ntitel: Pilot\n")
    with pytest.raises(SidecarError) as caught:
        load_sidecar(path)
    assert str(caught.value) == f"{path}:3: titel: Extra inputs are not permitted"
    assert caught.value.path == path


def test_bad_inline_quality_is_located(tmp_path):
    path = tmp_path / "ep.yaml"
    bad = dict(INLINE_QUALITY, audio_config=dict(INLINE_QUALITY["audio_config"], sample_rate=44000))
    path.write_text("is_public: yes please\nqualities:\n" + "\n".join(
        "  " + line for line in json.dumps([INLINE_QUALITY, bad], indent=1).splitlines()
    ) + "\n")
    with pytest.raises(SidecarError) as caught:
        load_sidecar(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}:1: is_public: Input should be a valid boolean"
    assert lines[1].startswith(f"{path}:")
    assert lines[1].endswith(": qualities[1].audio_config.sample_rate: must be one of 8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000")
    assert len(lines) == 2  # no noise from the preset-name alternative


def test_reserved_metadata_key(tmp_path):
    path = tmp_path / "ep.json"
    path.write_text('{"metadata": {"ingestd_job": "mine"}}')
    with pytest.raises(SidecarError, match="metadata: 'ingestd_job' is reserved"):
        load_sidecar(path)


def test_yaml_syntax_error_has_line(tmp_path):
    path = tmp_path / "ep.yaml"
    path.write_text("title: Pilot\ntags: [a, b\n")
    with pytest.raises(SidecarError, match=rf"^{path}:\d+: \(top level\): not valid YAML"):
        load_sidecar(path)


def test_json_syntax_error_has_line(tmp_path):
    path = tmp_path / "ep.json"
    path.write_text('{\n  "title": "Pilot",\n}\n')
    with pytest.raises(SidecarError, match=rf"^{path}:3: \(top level\): not valid JSON"):
        load_sidecar(path)


def test_sidecar_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "ep.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SidecarError, match="expected a mapping of keys, got list"):
        load_sidecar(path)


def test_sidecar_that_is_not_text(tmp_path):
    path = tmp_path / "ep.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SidecarError, match="cannot read"):
        load_sidecar(path)


def test_an_oversized_sidecar_is_refused_unread(tmp_path):
    path = tmp_path / "ep.json"
    path.write_text(json.dumps({"title": "Pilot", "description": "x" * (6 * 1024 * 1024)}))
    with pytest.raises(SidecarError, match=r"more than a sidecar may hold \(1048576 bytes\)") as caught:
        load_sidecar(path)
    assert caught.value.problems[0].file == str(path)


@pytest.mark.parametrize("name, text", [
    ("ep.json", "[" * 100_000 + "]" * 100_000),
    ("ep.yaml", "tags: " + "[" * 50_000 + "]" * 50_000),
])
def test_a_sidecar_nested_past_the_parsers_depth_is_a_sidecar_error(tmp_path, name, text):
    # Under the size cap, yet deeper than the parser's recursion: an error naming the file, not a crash to retry.
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SidecarError, match=rf"^{path}: \(top level\): nested too deeply to be a sidecar"):
        load_sidecar(path)
