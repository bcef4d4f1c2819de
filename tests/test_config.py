"""Loading config files: values, interpolation, and problems located by line and dotted key."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

import ingestd.config as config_module
from ingestd import media_schema
from ingestd.config import MIB, Config, FolderConfig, check_config, load_config
from ingestd.errors import ConfigError, ConfigProblem

REPO = Path(__file__).resolve().parent.parent
ENV = {"AIOZ_STREAM_TOKEN": "tok-123"}

MINIMAL = """\
api:
  token: tok
state_dir: state
folders:
  - path: inbox
    done_dir: done
    failed_dir: failed
"""


def minimal_plus(extra: str) -> str:
    return MINIMAL + textwrap.dedent(extra)


def write(tmp_path: Path, text: str, name: str = "ingestd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based line holding ``needle``, which must occur on exactly one line."""
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    return [str(p) for p in check_config(path, environ=environ or {})]


def assert_problem(path: Path, needle: str, key: str, message: str, environ: dict[str, str] | None = None) -> None:
    expected = f"{path}:{line_of(path, needle)}: {key}: {message}"
    found = problems(path, environ)
    assert any(p.startswith(expected) for p in found), f"{expected!r} not in {found}"


# --- loading valid files ------------------------------------------------------------------------


def test_example_config_loads_with_token_set():
    config = load_config(REPO / "config.example.yaml", environ=ENV)

    assert config.api.token is not None and config.api.token.get_secret_value() == "tok-123"
    assert config.state_dir == Path("/var/lib/ingestd")
    assert config.upload.chunk_size == 50 * MIB
    assert config.upload.transcode_timeout == 6 * 3600
    assert config.folders[0].path == Path("/srv/ingest/inbox")
    assert config.folders[0].max_wait == 3600
    assert config.presets["podcast"][0].audio_config.sample_rate == 44100
    assert config.rule("weekly") is not None and config.rule("weekly").qualities == "podcast"
    assert config.rule("nope") is None
    assert config.source == REPO / "config.example.yaml"


def test_example_config_mentions_every_key():
    text = (REPO / "config.example.yaml").read_text()

    def field_names(model: type[BaseModel]) -> set[str]:
        names = set(model.model_fields)
        for field in model.model_fields.values():
            for nested in re.findall(r"\w+", str(field.annotation)):
                candidate = getattr(config_module, nested, None) or getattr(media_schema, nested, None)
                if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate is not model:
                    names |= field_names(candidate)
        return names

    names = field_names(Config)
    assert {"sample_rate", "chunk_size", "regex", "done_dir", "level"} <= names
    assert sorted(name for name in names if f"{name}:" not in text) == []


def test_example_config_without_token_names_the_variable():
    path = REPO / "config.example.yaml"
    assert problems(path) == [
        f"{path}:{line_of(path, 'token: ${AIOZ_STREAM_TOKEN}')}: api.token: environment variable AIOZ_STREAM_TOKEN is not set"
    ]


def test_defaults_relative_paths_and_folder_lookup(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))

    assert config.state_dir == tmp_path / "state"
    folder = config.folders[0]
    assert (folder.path, folder.done_dir, folder.failed_dir) == (tmp_path / "inbox", tmp_path / "done", tmp_path / "failed")
    assert config.upload.workers == 2 and config.upload.chunk_size == 50 * MIB
    assert config.folder_for(tmp_path / "inbox" / "show" / "a.mp3") is folder
    assert config.folder_for(tmp_path / "done" / "a.mp3") is None


def test_secrets_never_print(tmp_path):
    path = write(tmp_path, MINIMAL.replace("token: tok", "token: hunter2-token\n  public_key: pk\n  secret_key: hunter2-secret"))
    config = load_config(path)

    shown = repr(config) + str(config) + config.model_dump_json()
    assert "hunter2" not in shown
    assert config.api.secret_key is not None and config.api.secret_key.get_secret_value() == "hunter2-secret"


def test_source_is_not_a_config_key(tmp_path):
    path = write(tmp_path, MINIMAL + "source: /etc/other.yaml\n")
    assert problems(path) == [f"{path}:8: source: unknown key"]
    with pytest.raises(AttributeError):
        load_config(write(tmp_path, MINIMAL, "ok.yaml")).source = Path("/x")  # type: ignore[misc]


# --- interpolation -------------------------------------------------------------------------------


def test_interpolation_with_and_without_defaults(tmp_path):
    path = write(tmp_path, """\
        api:
          token: ${TOKEN}
          base_url: ${BASE:-http://127.0.0.1:8080/api}
        state_dir: ${STATE:-/var/lib/ingestd}
        upload:
          workers: ${WORKERS:-3}
          chunk_size: ${CHUNK}
          max_cost_usd: ${MAX_COST:-null}
        folders:
          - path: /srv/${SITE}/inbox
            done_dir: /srv/${SITE}/done
            failed_dir: "/srv/${SITE}/failed-$${literal}"
        rules:
          - name: r
            title: "${PREFIX:-}{stem}"
        """)
    config = load_config(path, environ={"TOKEN": "t0k", "CHUNK": "8MiB", "SITE": "studio-a", "STATE": ""})

    assert config.api.token.get_secret_value() == "t0k"
    assert config.api.base_url == "http://127.0.0.1:8080/api"
    assert config.state_dir == Path("/var/lib/ingestd")  # empty counts as unset
    assert config.upload.workers == 3
    assert config.upload.chunk_size == 8 * MIB
    assert config.upload.max_cost_usd is None
    assert config.folders[0].path == Path("/srv/studio-a/inbox")
    assert config.folders[0].failed_dir == Path("/srv/studio-a/failed-${literal}")
    assert config.rules[0].title == "{stem}"


def test_interpolated_plain_values_are_typed_quoted_ones_stay_text(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        presets:
          p:
            - resolution: good
              type: hls
              container_type: mp4
              audio_config:
                codec: aac
                bitrate: ${BITRATE:-128000}
                channels: "${CH}"
                sample_rate: ${RATE}
        """))
    config = load_config(path, environ={"CH": "2", "RATE": "48000"})
    audio = config.presets["p"][0].audio_config
    assert (audio.channels, audio.sample_rate, audio.bitrate) == ("2", 48000, 128000)


def test_unset_and_empty_variables_are_located(tmp_path):
    path = write(tmp_path, """\
        api:
          token: ${AIOZ_STREAM_TOKEN}
        state_dir: ${STATE_DIR}
        folders:
          - path: /srv/ingest/inbox
            done_dir: /srv/ingest/done
            failed_dir: /srv/ingest/failed
        """)
    assert problems(path, {"STATE_DIR": ""}) == [
        f"{path}:2: api.token: environment variable AIOZ_STREAM_TOKEN is not set",
        f"{path}:3: state_dir: environment variable STATE_DIR is empty",
    ]


def test_malformed_placeholder(tmp_path):
    path = write(tmp_path, MINIMAL.replace("state_dir: state", "state_dir: ${STATE"))
    assert_problem(path, "${STATE", "state_dir", "malformed ${...}")


# --- sizes and durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "size"),
    [("5MiB", 5 * MIB), ("200MB", 200_000_000), ("52428800", 52428800), ("8 MiB", 8 * MIB), ("0.01GB", 10_000_000)],
)
def test_sizes(tmp_path, written, size):
    config = load_config(write(tmp_path, MINIMAL + f"upload:\n  chunk_size: {written}\n"))
    assert config.upload.chunk_size == size


@pytest.mark.parametrize(
    ("written", "seconds"), [("30", 30), ("1.5", 1.5), ("45s", 45), ("5m", 300), ("6h", 21600), ("1h30m", 5400), ("2d", 172800)]
)
def test_durations(tmp_path, written, seconds):
    config = load_config(write(tmp_path, MINIMAL + f"upload:\n  transcode_timeout: {written}\n"))
    assert config.upload.transcode_timeout == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("4MiB", "must be between 5MiB and 200MB, got 4194304 bytes"),
        ("201MB", "must be between 5MiB and 200MB, got 201000000 bytes"),
        ("lots", "'lots' is not a size"),
        ("10 parsecs", "'10 parsecs' is not a size"),
    ],
)
def test_bad_sizes(tmp_path, value, message):
    path = write(tmp_path, MINIMAL + f"upload:\n  chunk_size: {value}\n")
    assert_problem(path, "chunk_size", "upload.chunk_size", message)


@pytest.mark.parametrize("value", ["soon", "5 fortnights", "1h30", "true"])
def test_bad_durations(tmp_path, value):
    path = write(tmp_path, MINIMAL.replace("    failed_dir: failed", f"    failed_dir: failed\n    settle: {value}"))
    assert_problem(path, "settle", "folders[0].settle", "")


# --- each kind of problem, located ---------------------------------------------------------------


def test_yaml_syntax_error_line(tmp_path):
    path = write(tmp_path, """\
        api:
          token: tok
        state_dir: /var/lib/ingestd
          oops: this line is indented under a scalar
        """)
    [problem] = check_config(path)
    assert str(problem).startswith(f"{path}:4: (yaml): invalid YAML: ")


def test_unclosed_flow_mapping_points_past_the_opening(tmp_path):
    path = write(tmp_path, "api: {token: tok\nstate_dir: x\n")
    [problem] = check_config(path)
    assert problem.line == 2 and problem.message == "invalid YAML: while parsing a flow mapping (line 1), expected ',' or '}', but got ':'"


def test_duplicate_key_line(tmp_path):
    path = write(tmp_path, MINIMAL + "upload:\n  workers: 2\n  chunk_size: 8MiB\n  workers: 4\n")
    assert problems(path) == [f"{path}:11: upload.workers: duplicate key (first set on line 9); only one value can apply"]


def test_duplicate_top_level_section(tmp_path):
    path = write(tmp_path, MINIMAL + "folders:\n  - path: other\n    done_dir: d\n    failed_dir: f\n")
    assert problems(path) == [f"{path}:8: folders: duplicate key (first set on line 4); only one value can apply"]


@pytest.mark.parametrize(("text", "line"), [("- api\n- folders\n", 1), ("just text\n", 1), ("", None)])
def test_top_level_must_be_a_mapping(tmp_path, text, line):
    [problem] = check_config(write(tmp_path, text))
    assert problem.line == line and problem.key == ""


def test_unknown_keys_suggest_the_close_name(tmp_path):
    path = write(tmp_path, MINIMAL.replace("    done_dir: done", "    done_dir: done\n    recursve: false") + "upload:\n  chunk_sise: 8MiB\n  colour: blue\n")
    assert problems(path) == [
        f"{path}:7: folders[0].recursve: unknown key; did you mean 'recursive'?",
        f"{path}:10: upload.chunk_sise: unknown key; did you mean 'chunk_size'?",
        f"{path}:11: upload.colour: unknown key",
    ]


def test_wrong_types_and_ranges(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        upload:
          workers: 0
          parallel_parts: many
          part_index_base: 2
        status:
          listen: localhost
        unmatched: shrug
        """))
    found = problems(path)
    assert f"{path}:9: upload.workers: Input should be greater than or equal to 1" in found
    assert f"{path}:10: upload.parallel_parts: Input should be a valid integer, unable to parse string as an integer" in found
    assert f"{path}:11: upload.part_index_base: Input should be 0 or 1" in found
    assert f"{path}:13: status.listen: 'localhost' is not HOST:PORT (example: 127.0.0.1:9137)" in found
    assert f"{path}:14: unmatched: Input should be 'fail' or 'ignore'" in found
    assert len(found) == 5


def test_missing_required_keys_point_at_their_parent(tmp_path):
    path = write(tmp_path, """\
        api:
          timeout: 5
        folders:
          - path: inbox
            failed_dir: failed
        """)
    assert problems(path) == [
        f"{path}:1: api: set api.token, or both api.public_key and api.secret_key",
        f"{path}:1: state_dir: required key is missing",
        f"{path}:4: folders[0].done_dir: required key is missing",
    ]


def test_rule_regex_that_does_not_compile(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        rules:
          - name: weekly
            match:
              filename: "*.mp3"
              regex: '^(?P<show>.+_ep(\\d+)$'
        """))
    assert_problem(path, "regex:", "rules[0].match.regex", "regex does not compile: missing ), unterminated subpattern")


def test_rule_naming_a_missing_preset(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        presets:
          podcast:
            - {resolution: highest, type: hls, container_type: mpegts, audio_config: {codec: aac, bitrate: 320000, channels: "2", sample_rate: 44100}}
        defaults:
          qualities: radio
        rules:
          - name: weekly
            match: {filename: "*.mp3"}
            qualities: podcats
        """))
    assert problems(path) == [
        f"{path}:12: defaults.qualities: no preset named 'radio' (presets: podcast)",
        f"{path}:16: rules[0].qualities: no preset named 'podcats'; did you mean 'podcast'? (presets: podcast)",
    ]


def test_duplicate_rule_names_and_unreachable_rules(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        rules:
          - name: weekly
            match: {folder: "shows/*"}
          - name: top-level-only
            match: {folder: ""}
          - name: weekly
            match: {filename: "*.wav"}
          - name: default
          - name: late
            match: {filename: "*.mp3"}
        """))
    assert problems(path) == [
        f"{path}:13: rules[2].name: rule name 'weekly' is already used by rules[0]",
        f"{path}:16: rules[4]: this rule can never match: rules[3] has no match conditions and takes every file",
    ]


def test_presets_follow_the_audio_rules(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        presets:
          podcast:
            - resolution: highest
              type: hls
              container_type: fmp4
              audio_config: {codec: aac, bitrate: 320000, channels: "2", sample_rate: 44100}
            - resolution: highest
              type: dash
              container_type: fmp4
              audio_config: {codec: aac, bitrate: 128000, channels: "2", sample_rate: 48000}
          radio:
            - resolution: ultra
              type: hls
              container_type: mp4
              audio_config:
                codec: mp3
                bitrate: 128000
                channels: 2
                sample_rate: 44000
        """))
    assert problems(path) == [
        f"{path}:10: presets.podcast[0]: container_type 'fmp4' does not fit type 'hls' (allowed: mpegts, mp4)",
        f"{path}:14: presets.podcast[1].resolution: resolution 'highest' is already used by presets.podcast[0]",
        f"{path}:19: presets.radio[0].resolution: Input should be 'standard', 'good', 'highest' or 'lossless'",
        f"{path}:23: presets.radio[0].audio_config.codec: Input should be 'aac'",
        f"{path}:25: presets.radio[0].audio_config.channels: Input should be '2' (write it quoted: \"2\")",
        f"{path}:26: presets.radio[0].audio_config.sample_rate: must be one of 8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000",
    ]


def test_inline_rule_qualities_are_checked_too(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        rules:
          - name: hq
            qualities:
              - {resolution: good, type: dash, container_type: fmp4, audio_config: {codec: aac, bitrate: 1, channels: "2", sample_rate: 8000}}
              - {resolution: good, type: dash, container_type: fmp4, audio_config: {codec: aac, bitrate: 1, channels: "2", sample_rate: 7000}}
        """))
    assert problems(path) == [
        f"{path}:12: rules[0].qualities[1].audio_config.sample_rate: must be one of 8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000",
        f"{path}:12: rules[0].qualities[1].resolution: resolution 'good' is already used by rules[0].qualities[0]",
    ]


def test_done_and_failed_dirs_must_stay_out_of_watched_folders(tmp_path):
    path = write(tmp_path, """\
        api: {token: tok}
        state_dir: /var/lib/ingestd
        folders:
          - path: /srv/ingest/inbox
            done_dir: /srv/ingest/inbox/done
            failed_dir: /srv/ingest/failed
          - path: /srv/ingest/drop
            done_dir: /srv/ingest/done
            failed_dir: /srv/ingest/inbox
        """)
    assert problems(path) == [
        f"{path}:5: folders[0].done_dir: lies inside the watched folder folders[0].path (/srv/ingest/inbox); finished files would be ingested again",
        f"{path}:9: folders[1].failed_dir: is the watched folder folders[0].path (/srv/ingest/inbox); finished files would be ingested again",
    ]


def test_watched_folders_must_not_nest_including_relative_paths(tmp_path):
    path = write(tmp_path, """\
        api: {token: tok}
        state_dir: /var/lib/ingestd
        folders:
          - {path: inbox, done_dir: done, failed_dir: failed}
          - {path: ./inbox/shows, done_dir: done2, failed_dir: failed2}
          - {path: ../{name}/inbox, done_dir: done3, failed_dir: failed3}
        """.replace("{name}", tmp_path.name))
    assert problems(path) == [
        f"{path}:5: folders[1].path: lies inside folders[0].path ({tmp_path / 'inbox'}); watched folders must not nest",
        f"{path}:6: folders[2].path: the same folder is already watched by folders[0]",
    ]


def test_a_symlinked_alias_of_a_watched_folder_is_caught(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "inbox")
    path = write(tmp_path, MINIMAL.replace("done_dir: done", "done_dir: alias/done"))
    assert_problem(path, "done_dir", "folders[0].done_dir", "lies inside the watched folder folders[0].path")


def test_every_problem_is_reported_at_once_in_line_order(tmp_path):
    path = write(tmp_path, """\
        api:
          token: ${AIOZ_STREAM_TOKEN}
          timeout: forever
        upload:
          chunk_size: 1KiB
          workers: 2
          workers: 3
        folders:
          - path: /srv/in
            done_dir: /srv/in/done
            failed_dir: /srv/failed
            observer: inotify
        rules:
          - name: r
            qualities: nope
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:1: state_dir: required key is missing",
        f"{path}:2: api.token: environment variable AIOZ_STREAM_TOKEN is not set",
        f"{path}:3: api.timeout: 'forever' is not a duration (examples: 30, 30s, 5m, 1h30m, 6h)",
        f"{path}:5: upload.chunk_size: must be between 5MiB and 200MB, got 1024 bytes",
        f"{path}:7: upload.workers: duplicate key (first set on line 6); only one value can apply",
        f"{path}:10: folders[0].done_dir: lies inside the watched folder folders[0].path (/srv/in); finished files would be ingested again",
        f"{path}:12: folders[0].observer: Input should be 'auto', 'native' or 'polling'",
        f"{path}:15: rules[0].qualities: no preset named 'nope' (presets: none are defined)",
    ]
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]


def test_anchors_and_merge_keys(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        presets:
          base: &base
            - &hq {resolution: highest, type: hls, container_type: mpegts,
                   audio_config: &audio {codec: aac, bitrate: 320000, channels: "2", sample_rate: 44100}}
          both:
            - *hq
            - {resolution: good, type: hls, container_type: mpegts, audio_config: {<<: *audio, bitrate: 128000}}
        """))
    config = load_config(path)
    assert [q.audio_config.bitrate for q in config.presets["both"]] == [320000, 128000]
    assert config.presets["both"][1].audio_config.sample_rate == 44100


def test_unreadable_file(tmp_path):
    missing = tmp_path / "absent.yaml"
    assert check_config(missing) == [ConfigProblem(str(missing), None, "", "cannot read config file: No such file or directory")]


def test_folder_config_keeps_working_when_built_in_code(tmp_path):
    folder = FolderConfig(path=tmp_path / "in", done_dir=tmp_path / "done", failed_dir=tmp_path / "failed")
    config = Config(api={"token": "t"}, state_dir=tmp_path, folders=[folder])
    assert config.source is None and config.folder_for(tmp_path / "in" / "x.wav") is folder


# --- examples in the documentation ---------------------------------------------------------------


def _documented_configs() -> list[tuple[str, str]]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = []
    for doc in files:
        if not doc.is_file():
            continue
        for n, block in enumerate(re.findall(r"^```ya?ml[^\n]*\n(.*?)^```", doc.read_text(), re.M | re.S)):
            if re.search(r"^folders:", block, re.M):
                found.append((f"{doc.relative_to(REPO)}#{n}", block))
    return found


def test_documented_config_examples_load(tmp_path):
    examples = _documented_configs()
    if not examples:
        pytest.skip("no documented config examples with a top-level folders: key yet")
    for where, block in examples:
        environ = {name: f"value-of-{name}" for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", block)}
        path = tmp_path / "example.yaml"
        path.write_text(block)
        assert check_config(path, environ=environ) == [], where


def test_a_config_nested_past_the_parsers_depth_is_a_problem_not_a_crash(tmp_path):
    path = write(tmp_path, minimal_plus("tags: " + "[" * 50_000 + "]" * 50_000 + "\n"))
    assert problems(path) == [f"{path}: (yaml): invalid YAML: nested too deeply"]


def test_a_file_larger_than_any_config_is_refused_unread(tmp_path):
    # `--config` pointed at a recording (or /dev/zero) was read whole into memory before anything was said.
    path = write(tmp_path, MINIMAL + ("# padding\n" * (2 * 1024 * 1024)))
    assert problems(path) == [f"{path}: (top level): cannot read config file: larger than 16 MiB; is it the config file?"]


def test_self_referring_alias_is_a_problem_not_a_crash(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        tags: &loop [a, *loop]
        """))
    assert problems(path) == [
        f"{path}:8: tags[1]: an alias refers to a mapping or list that contains it",
        f"{path}:8: tags: unknown key",
    ]


def test_aliases_nested_in_aliases_are_refused_before_they_expand(tmp_path):
    # Nine lists of nine, each made of the one before: a few hundred bytes that read as 9**6 values (or, two lines
    # more, 9**8: the daemon's memory, on a reload). Refused once past any real config's size, at the line reached.
    levels = [f"l0: &l0 [{', '.join(['x'] * 9)}]"]
    levels += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 6)]
    path = write(tmp_path, minimal_plus("\n".join(levels) + "\n"))
    found = problems(path)
    assert len(found) == 1, found[:5]
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+: l5(\[\d+\])*: the config expands to more than 100000 values; "
                        r"are aliases repeated inside aliases\?", found[0]), found[0]


def test_only_one_document(tmp_path):
    path = write(tmp_path, MINIMAL + "---\nstate_dir: other\n")
    assert problems(path) == [f"{path}:8: (yaml): invalid YAML: expected a single document in the stream (line 1), but found another document"]


def test_unknown_keys_deep_inside_presets_rules_and_defaults(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        presets:
          p: [{resolution: good, type: hls, container_type: mp4, audio_config: {codec: aac, bitrate: 1, channels: "2", sample_rate: 8000, langauge: en}}]
        rules:
          - name: r
            match: {filenme: "*.mp3"}
        defaults: {tittle: x}
        """))
    assert problems(path) == [
        f"{path}:9: presets.p[0].audio_config.langauge: unknown key; did you mean 'language'?",
        f"{path}:12: rules[0].match.filenme: unknown key; did you mean 'filename'?",
        f"{path}:13: defaults.tittle: unknown key; did you mean 'title'?",
    ]


def test_template_syntax_errors_name_the_rule_key_and_line(tmp_path):
    path = write(tmp_path, minimal_plus("""\
        rules:
          - name: weekly
            title: "{show - Episode {ep}"
            tags: [podcast, "{show!shout}"]
        """))
    problems = [str(p) for p in check_config(path)]
    assert any(p.startswith(f"{path}:") and ": rules[0].title: " in p for p in problems), problems
    assert any(": rules[0].tags[1]: " in p and "unknown filter" in p for p in problems), problems
    assert any(p.startswith(f"{path}:{line_of(path, 'Episode')}: rules[0].title") for p in problems), problems


def test_format_size_reads_back_with_parse_size():
    from ingestd.config import format_size, parse_size

    assert [format_size(n) for n in (512, 12 * 1024 * 1024, 3 * 1024**3)] == ["512B", "12.0MiB", "3.0GiB"]
    assert parse_size(format_size(50 * 1024 * 1024)) == 50 * 1024 * 1024
