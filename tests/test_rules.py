import os
import shutil
import unicodedata
from datetime import datetime
from pathlib import Path

import pytest

from ingestd.config import Config
from ingestd.errors import RenderError
from ingestd.probe import AudioInfo, probe
from ingestd.rules import RuleDecision, explain, format_explanation, match_rule, render
from ingestd.templates import check_template, render_template
from ingestd.sidecar import load_sidecar
from tests.audio import write_wav

FIXTURES = Path(__file__).parent / "fixtures"

PODCAST = [{
    "resolution": "highest", "type": "hls", "container_type": "mpegts",
    "audio_config": {"codec": "aac", "bitrate": 320000, "channels": "2", "sample_rate": 44100, "language": "en", "index": 0},
}]
INLINE = [{
    "resolution": "standard", "type": "dash", "container_type": "fmp4",
    "audio_config": {"codec": "aac", "bitrate": 64000, "channels": "2", "sample_rate": 22050},
}]

WEEKLY = {
    "name": "weekly",
    "match": {"folder": "shows/*", "filename": "*.mp3", "regex": r"^(?P<show>.+)_ep(?P<ep>\d+)\.mp3$"},
    "title": "{show} - Episode {ep}",
    "description": "Episode {ep:03} of {show}",
    "tags": ["podcast", "{show}"],
    "metadata": {"show": "{show}", "episode": "{ep}"},
    "qualities": "podcast",
    "publish": "on_done",
}


def make_config(tmp_path: Path, rules: list[dict], **extra) -> Config:
    return Config.model_validate({
        "api": {"token": "secret"},
        "state_dir": str(tmp_path / "state"),
        "folders": [{"path": str(tmp_path / "in"), "done_dir": str(tmp_path / "done"), "failed_dir": str(tmp_path / "failed")}],
        "presets": {"podcast": PODCAST},
        "rules": rules,
        **extra,
    })


def audio_file(tmp_path: Path, relative: str) -> Path:
    return write_wav(tmp_path / "in" / relative, 0.1)


def render_file(config: Config, tmp_path: Path, path: Path, **kwargs):
    kwargs.setdefault("audio", None)
    kwargs.setdefault("sidecar", None)
    return render(config, path, tmp_path / "in", job_id="job-1", **kwargs)


# ---- templates ------------------------------------------------------------------------------------

VARIABLES = {"show": "Night Owls", "ep": "7", "blank": "", "size": 1234567, "mtime": datetime(2026, 3, 1, 21, 30),
             "tag.title": "Café Society"}


@pytest.mark.parametrize("template, expected", [
    ("{show} - Episode {ep}", "Night Owls - Episode 7"),
    ("Episode {ep:03}", "Episode 007"),
    ("{mtime}", "2026-03-01"),
    ("{mtime:%d %B %Y, %H:%M}", "01 March 2026, 21:30"),
    ("{size:,} bytes", "1,234,567 bytes"),
    ("{tag.title:.4}", "Café"),
    ("{show!upper} {show!lower} {blank|show!slug}", "NIGHT OWLS night owls night-owls"),
    ("{tag.title!slug}", "cafe-society"),
    ("{tag.artist|show}", "Night Owls"),
    ("{blank|tag.artist|show}", "Night Owls"),
    ('{tag.artist|"Unknown Artist"}', "Unknown Artist"),
    ('{tag.artist|"a|b: c!"}', "a|b: c!"),
    ('{blank|""}', ""),
    ("{blank}", ""),
    ("{{show}} is {show}", "{show} is Night Owls"),
    ("{show:.5!upper!strip}", "NIGHT"),
])
def test_template_rendering(template, expected):
    assert render_template(template, VARIABLES) == expected


@pytest.mark.parametrize("template, message", [
    ("{show", "is not closed"),
    ("show}", "single '}'"),
    ("{}", "expected a variable name"),
    ("{show!shout}", "unknown filter 'shout'"),
    ('{"x"|show}', "quoted text must be the last alternative"),
    ("{show name}", "unexpected ' name'"),
])
def test_template_syntax_errors(template, message):
    with pytest.raises(ValueError, match=message):
        check_template(template)


def test_spec_that_does_not_fit_the_value():
    with pytest.raises(ValueError, match="format spec 'd' does not fit 'Night Owls'"):
        render_template("{show:d}", VARIABLES)


# ---- matching -------------------------------------------------------------------------------------


def test_first_match_wins_and_every_decision_has_a_reason(tmp_path):
    config = make_config(tmp_path, [
        {"name": "archive", "match": {"folder": "archive"}},
        {"name": "wav-only", "match": {"filename": "*.wav"}},
        WEEKLY,
        {"name": "catch-all"},
    ])
    path = audio_file(tmp_path, "shows/owls/night_ep12.mp3")
    rule, groups, decisions = match_rule(config, path, tmp_path / "in")
    assert rule.name == "weekly"
    assert groups == {"show": "night", "ep": "12"}
    assert decisions == [
        RuleDecision("archive", False, "folder 'archive' does not match 'shows/owls'"),
        RuleDecision("wav-only", False, "filename '*.wav' does not match 'night_ep12.mp3'"),
        RuleDecision("weekly", True, "folder 'shows/*' matches 'shows/owls', filename '*.mp3' matches 'night_ep12.mp3', "
                                     r"regex '^(?P<show>.+)_ep(?P<ep>\\d+)\\.mp3$' matches 'night_ep12.mp3'"),
        RuleDecision("catch-all", False, "not tried: rule 'weekly' matched first"),
    ]


def test_regex_failure_and_the_root_folder(tmp_path):
    config = make_config(tmp_path, [WEEKLY, {"name": "root-only", "match": {"folder": ""}}])
    path = audio_file(tmp_path, "loose.mp3")
    rule, groups, decisions = match_rule(config, path, tmp_path / "in")
    assert rule.name == "root-only" and groups == {}
    assert decisions[0].reason == "folder 'shows/*' does not match ''"
    assert decisions[1].reason == "folder '' matches ''"

    in_show = audio_file(tmp_path, "shows/owls/trailer.mp3")
    _, _, decisions = match_rule(config, in_show, tmp_path / "in")
    assert decisions[0].reason.startswith("regex '^(?P<show>") and decisions[0].reason.endswith("does not match 'trailer.mp3'")


def test_rule_without_match_conditions_matches_everything(tmp_path):
    config = make_config(tmp_path, [{"name": "default"}])
    rule, _, decisions = match_rule(config, audio_file(tmp_path, "deep/down/x.wav"), tmp_path / "in")
    assert rule.name == "default"
    assert decisions == [RuleDecision("default", True, "no match conditions: matches every file")]


def test_no_rule_matches(tmp_path):
    config = make_config(tmp_path, [{"name": "archive", "match": {"folder": "archive"}}])
    path = audio_file(tmp_path, "inbox/x.wav")
    with pytest.raises(RenderError, match=r"no rule matches 'inbox/x.wav' \(archive: folder 'archive' does not match 'inbox'\)"):
        render_file(config, tmp_path, path)


def test_nfd_file_name_matches_an_nfc_pattern(tmp_path):
    config = make_config(tmp_path, [{"name": "cafe", "match": {"filename": "Café*"}, "title": "{stem}"}])
    path = audio_file(tmp_path, unicodedata.normalize("NFD", "Café Stories.wav"))
    rendered = render_file(config, tmp_path, path)
    assert rendered.rule == "cafe"
    assert rendered.request.title == "Caf\u00e9 Stories"


# ---- rendering ------------------------------------------------------------------------------------


def test_weekly_rule_renders_the_full_request(tmp_path):
    config = make_config(tmp_path, [WEEKLY], defaults={"is_public": True})
    path = audio_file(tmp_path, "shows/owls/Night Owls_ep3.mp3")
    rendered = render_file(config, tmp_path, path)
    assert rendered.rule == "weekly"
    assert rendered.publish == "on_done"
    assert rendered.make_public_when_done is True
    assert rendered.quality_names == ["highest"]
    assert rendered.request.body() == {
        "type": "audio",
        "title": "Night Owls - Episode 3",
        "description": "Episode 003 of Night Owls",
        "is_public": False,  # created private, made public once transcoded
        "tags": ["podcast", "Night Owls"],
        "metadata": [{"key": "show", "value": "Night Owls"}, {"key": "episode", "value": "3"},
                     {"key": "ingestd_job", "value": "job-1"}],
        "qualities": PODCAST,
    }
    assert rendered.variables["show"] == "Night Owls"
    assert rendered.variables["folder"] == "shows/owls"
    assert rendered.variables["parent"] == "owls"
    assert rendered.variables["ext"] == "mp3"


def test_on_done_with_private_default_stays_private(tmp_path):
    config = make_config(tmp_path, [dict(WEEKLY, is_public=False)], defaults={"is_public": True})
    rendered = render_file(config, tmp_path, audio_file(tmp_path, "shows/a/x_ep1.mp3"))
    assert rendered.request.is_public is False
    assert rendered.make_public_when_done is False


def test_immediate_publish_keeps_is_public(tmp_path):
    config = make_config(tmp_path, [{"name": "all", "title": "{stem}"}], defaults={"is_public": True})
    rendered = render_file(config, tmp_path, audio_file(tmp_path, "x.wav"))
    assert rendered.publish == "immediately"
    assert rendered.request.is_public is True
    assert rendered.make_public_when_done is False
    assert rendered.quality_names == []
    assert "qualities" not in rendered.request.body()


def test_missing_variable_names_rule_variable_and_template(tmp_path):
    config = make_config(tmp_path, [{"name": "weekly", "title": "{show} - Episode {ep}"}])
    with pytest.raises(RenderError) as caught:
        render_file(config, tmp_path, audio_file(tmp_path, "x.wav"))
    assert str(caught.value) == ("rule 'weekly': template variable 'show' is not defined for this file "
                                 "(title: '{show} - Episode {ep}')")
    assert (caught.value.rule, caught.value.variable) == ("weekly", "show")


def test_missing_variable_with_fallbacks_names_them_all(tmp_path):
    config = make_config(tmp_path, [{"name": "tagged", "title": "{stem}", "tags": ["{tag.genre|tag.album}"]}])
    with pytest.raises(RenderError, match=r"template variable 'tag.genre' nor 'tag.album' is not defined .*\(tags\[0\]:"):
        render_file(config, tmp_path, audio_file(tmp_path, "x.wav"), audio=AudioInfo("wave", 0.1, 44100, 2, {}))


def test_file_and_tag_variables(tmp_path):
    config = make_config(tmp_path, [{
        "name": "tags",
        "title": "{tag.title} ({tag.artist})",
        "description": "{tag.comment} {duration}s, {size} bytes, {mtime:%Y}",
        "tags": ["{tag.genre!lower}", "{tag.album|\"\"}", "{tag.date}"],
        "metadata": {"track": "{tag.track:02}", "file": "{name}", "where": "{folder|\"root\"}"},
    }])
    path = tmp_path / "in" / "tagged.mp3"
    path.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "tagged.mp3", path)
    os.utime(path, (datetime(2025, 6, 1).timestamp(),) * 2)
    rendered = render_file(config, tmp_path, path, audio=probe(path))
    body = rendered.request.body()
    assert body["title"] == "Pilot Episode (The Studio)"
    assert body["description"] == f"The first episode. 2s, {path.stat().st_size} bytes, 2025"
    assert body["tags"] == ["podcast", "Season One", "2026"]
    assert body["metadata"][:3] == [{"key": "track", "value": "03"}, {"key": "file", "value": "tagged.mp3"},
                                    {"key": "where", "value": "root"}]
    assert rendered.variables["mtime"] == "2025-06-01"
    assert rendered.variables["tag.album"] == "Season One"


def test_defaults_merge_under_the_rule(tmp_path):
    config = make_config(tmp_path, [{
        "name": "r", "title": "{stem}", "tags": ["b", "c"], "metadata": {"team": "rule", "kind": "episode"},
    }], defaults={
        "description": "From defaults", "tags": ["a", "b"], "metadata": {"team": "defaults", "studio": "north"},
        "qualities": "podcast", "is_public": False,
    })
    body = render_file(config, tmp_path, audio_file(tmp_path, "x.wav")).request.body()
    assert body["description"] == "From defaults"
    assert body["tags"] == ["a", "b", "c"]
    assert body["metadata"] == [{"key": "team", "value": "rule"}, {"key": "studio", "value": "north"},
                                {"key": "kind", "value": "episode"}, {"key": "ingestd_job", "value": "job-1"}]
    assert body["qualities"] == PODCAST
    assert body["is_public"] is False


def test_title_defaults_to_stem_and_empty_tags_are_dropped(tmp_path):
    config = make_config(tmp_path, [{"name": "r", "tags": ["{tag.genre|\"\"}", "  ", "keep", "keep"]}])
    body = render_file(config, tmp_path, audio_file(tmp_path, "Morning Show.wav")).request.body()
    assert body["title"] == "Morning Show"
    assert body["tags"] == ["keep"]


def test_nfd_title_is_normalised(tmp_path):
    nfd = unicodedata.normalize("NFD", "Café Stories")
    config = make_config(tmp_path, [{"name": "r", "title": nfd, "tags": [nfd], "metadata": {"m": nfd}}])
    body = render_file(config, tmp_path, audio_file(tmp_path, "x.wav")).request.body()
    nfc = "Caf\u00e9 Stories"
    assert (body["title"], body["tags"], body["metadata"][0]["value"]) == (nfc, [nfc], nfc)


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "title: Special Edition\ntags: [bonus]\nmetadata:\n  episode: 99\nis_public: false\nqualities: podcast\n"),
    (".json", '{"title": "Special Edition", "tags": ["bonus"], "metadata": {"episode": 99}, "is_public": false,'
              ' "qualities": "podcast"}'),
])
def test_sidecar_overrides_whole_fields(tmp_path, suffix, text):
    config = make_config(tmp_path, [dict(WEEKLY, qualities=INLINE)], defaults={"is_public": True})
    path = audio_file(tmp_path, "shows/owls/night_ep3.mp3")
    sidecar_path = path.with_suffix(suffix)
    sidecar_path.write_text(text)
    rendered = render_file(config, tmp_path, path, sidecar=load_sidecar(sidecar_path))
    body = rendered.request.body()
    assert body["title"] == "Special Edition"
    assert body["description"] == "Episode 003 of night"  # not in the sidecar: the rule's
    assert body["tags"] == ["bonus"]
    assert body["metadata"] == [{"key": "episode", "value": "99"}, {"key": "ingestd_job", "value": "job-1"}]
    assert body["qualities"] == PODCAST
    assert body["is_public"] is False
    assert rendered.make_public_when_done is False  # the sidecar said private


def test_sidecar_values_are_not_templates(tmp_path):
    config = make_config(tmp_path, [{"name": "r"}])
    path = audio_file(tmp_path, "x.wav")
    path.with_suffix(".yaml").write_text("title: 'Notes on {braces}'\n")
    rendered = render_file(config, tmp_path, path, sidecar=load_sidecar(path.with_suffix(".yaml")))
    assert rendered.request.title == "Notes on {braces}"


def test_rule_may_not_set_the_job_metadata(tmp_path):
    config = make_config(tmp_path, [{"name": "r", "metadata": {"ingestd_job": "mine"}}])
    with pytest.raises(RenderError, match="rule 'r': metadata key 'ingestd_job' is reserved"):
        render_file(config, tmp_path, audio_file(tmp_path, "x.wav"))


def test_unknown_preset(tmp_path):
    config = make_config(tmp_path, [{"name": "r", "qualities": "studio"}])
    with pytest.raises(RenderError, match=r"rule 'r': unknown quality preset 'studio' \(presets: podcast\)"):
        render_file(config, tmp_path, audio_file(tmp_path, "x.wav"))


def test_invalid_request_lists_the_problems(tmp_path):
    config = make_config(tmp_path, [{"name": "long", "title": "{stem}" * 60, "tags": ["{stem}" * 60]}])
    with pytest.raises(RenderError) as caught:
        render_file(config, tmp_path, audio_file(tmp_path, "abcde.wav"))
    assert str(caught.value) == ("rule 'long': the create request is not valid: "
                                 "title: String should have at most 255 characters; "
                                 "tags[0]: String should have at most 255 characters")
    assert caught.value.rule == "long"


def test_template_syntax_error_at_render_names_rule_and_field(tmp_path):
    config = make_config(tmp_path, [{"name": "r", "description": "{stem!shout}"}])
    with pytest.raises(RenderError, match=r"rule 'r': description: unknown filter 'shout'"):
        render_file(config, tmp_path, audio_file(tmp_path, "x.wav"))


# ---- explain --------------------------------------------------------------------------------------


def test_explain_shows_decisions_variables_and_the_exact_body(tmp_path):
    config = make_config(tmp_path, [{"name": "archive", "match": {"folder": "archive"}}, WEEKLY])
    path = tmp_path / "in" / "shows" / "owls" / "night_ep4.mp3"
    path.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "tagged.mp3", path)
    path.with_suffix(".yaml").write_text("description: From the sidecar\n")

    data = explain(config, path)
    assert data["rule"] == "weekly"
    assert data["rules"] == [
        {"rule": "archive", "matched": False, "reason": "folder 'archive' does not match 'shows/owls'"},
        {"rule": "weekly", "matched": True, "reason": data["rules"][1]["reason"]},
    ]
    assert data["audio"]["tags"]["title"] == "Pilot Episode"
    assert data["sidecar"] == {"path": str(path.with_suffix(".yaml")), "values": {"description": "From the sidecar"}}
    assert data["variables"]["ep"] == "4"
    assert data["request"] == {
        "type": "audio", "title": "night - Episode 4", "description": "From the sidecar", "is_public": False,
        "tags": ["podcast", "night"],
        "metadata": [{"key": "show", "value": "night"}, {"key": "episode", "value": "4"},
                     {"key": "ingestd_job", "value": "<job id>"}],
        "qualities": PODCAST,
    }
    assert data["error"] is None

    text = format_explanation(data)
    assert "no     archive  folder 'archive' does not match 'shows/owls'" in text
    assert "match  weekly" in text
    assert '"title": "night - Episode 4"' in text
    assert "publish:  on_done (created private; made public once transcoded)" in text
    assert "tag.title = Pilot Episode" in text


def test_explain_reports_problems_instead_of_raising(tmp_path):
    config = make_config(tmp_path, [WEEKLY])
    path = tmp_path / "in" / "loose.mp3"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not audio at all" * 10)
    path.with_suffix(".json").write_text('{"titel": "x"}')

    data = explain(config, path)
    assert data["audio"]["error"].startswith("not audio")
    assert "titel: Extra inputs are not permitted" in data["sidecar"]["error"]
    assert data["rule"] is None and data["request"] is None
    assert data["error"].startswith("no rule matches 'loose.mp3'")
    text = format_explanation(data)
    assert "error:    no rule matches 'loose.mp3'" in text
    assert "no     weekly  folder 'shows/*' does not match ''" in text


def test_control_characters_in_file_names_do_not_reach_titles(tmp_path):
    inbox = tmp_path / "inbox"
    audio = inbox / "two\nlines\t.wav"
    write_wav(audio, 0.1)
    config = Config.model_validate({
        "api": {"token": "t" * 12}, "state_dir": str(tmp_path / "state"),
        "folders": [{"path": str(inbox), "done_dir": str(tmp_path / "done"), "failed_dir": str(tmp_path / "failed")}],
        "rules": [{"name": "default", "title": "{stem}", "tags": ["{name}"]}],
    })
    rendered = render(config, audio, inbox, job_id="j1", audio=None, sidecar=None)
    assert rendered.request.title == "two lines"
    assert rendered.request.tags == ["two lines .wav"]


def test_control_characters_in_regex_groups_and_tags_never_reach_the_request(tmp_path):
    config = make_config(tmp_path, [{
        "name": "groups", "match": {"regex": r"^(?P<show>.+)_ep(?P<ep>\d+)\.wav$"},
        "title": "{show} - {ep}", "description": "{show} {tag.title}", "tags": ["{show}"], "metadata": {"show": "{show}"},
    }])
    path = audio_file(tmp_path, "Evil\x1b[2J\x07Show\x9b_ep1.wav")
    audio = AudioInfo(format="wav", duration=1.0, sample_rate=44100, channels=2, tags={"title": "tag\x1b]0;pwned\x07"})
    rendered = render_file(config, tmp_path, path, audio=audio)
    body = rendered.request.body()
    texts = [body["title"], body["description"], *body["tags"], *(m["value"] for m in body["metadata"])]
    texts += list(rendered.variables.values())
    assert body["title"] == "Evil [2J Show  - 1"
    assert not [t for t in texts if any(unicodedata.category(c) == "Cc" for c in t)]
