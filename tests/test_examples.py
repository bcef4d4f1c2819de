"""Every config example a person may copy, from config.example.yaml, the README and docs/, loads and means what it says."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from ingestd.config import load_config
from ingestd.rules import render

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


class AnyEnvironment(Mapping[str, str]):
    """Every ${VAR} an example names is set, to a value of the form its name suggests."""

    def __getitem__(self, name: str) -> str:
        if any(word in name for word in ("URL", "CHAT", "MAIL")):
            return f"json://hooks.example/{name.lower()}"  # an Apprise URL, one per variable
        return "example-value-1234"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def yaml_examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            line = text[:match.start()].count("\n") + 2
            found.append((f"{doc.relative_to(REPO)}:{line}", match.group(1)))
    return found


EXAMPLES = yaml_examples()


def test_the_docs_have_examples_to_check():
    assert len(EXAMPLES) >= 5
    assert any(where.startswith("README.md") for where, _ in EXAMPLES)


@pytest.mark.parametrize(("where", "example"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_every_yaml_example_in_the_docs_loads(tmp_path, where, example):
    """A whole config loads as it is; a fragment loads in place of its keys in config.example.yaml."""
    fragment = yaml.safe_load(example)
    assert isinstance(fragment, dict), f"{where}: not a mapping of config keys"
    config = yaml.safe_load((REPO / "config.example.yaml").read_text()) | fragment
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    load_config(path, environ=AnyEnvironment())


def weekly_episode(config_path: Path, tmp_path: Path):
    config = load_config(config_path, environ=AnyEnvironment())
    root = tmp_path / "inbox"
    episode = root / "shows" / "mytalk" / "mytalk_ep12.mp3"
    episode.parent.mkdir(parents=True, exist_ok=True)
    episode.write_bytes(b"ID3")
    return render(config, episode, root, job_id="job-1", audio=None, sidecar=None)


def test_the_example_weekly_rule_publishes_once_transcoded_as_its_comment_says(tmp_path):
    rendered = weekly_episode(REPO / "config.example.yaml", tmp_path)
    assert rendered.rule == "weekly" and rendered.publish == "on_done"
    assert rendered.request.body()["is_public"] is False  # created private ...
    assert rendered.make_public_when_done is True  # ... and made public once transcoded


def test_the_readme_weekly_rule_publishes_once_transcoded(tmp_path):
    where, example = next((w, e) for w, e in EXAMPLES if w.startswith("README.md") and "name: weekly" in e)
    path = tmp_path / "config.yaml"
    path.write_text(example)
    rendered = weekly_episode(path, tmp_path)
    assert rendered.request.body()["title"] == "Mytalk - Episode 012"
    assert rendered.make_public_when_done is True
