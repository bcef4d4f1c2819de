"""Shared fixtures: a real emulator on a loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingestd.emulator import Emulator, EmulatorSettings

TEST_MIN_PART_SIZE = 64 * 1024
TEST_TRANSCODE_DELAY = 0.2


def fast_settings(**overrides) -> EmulatorSettings:
    """Emulator settings that keep tests quick: small parts, short transcoding."""
    values = {"min_part_size": TEST_MIN_PART_SIZE, "transcode_delay": TEST_TRANSCODE_DELAY} | overrides
    return EmulatorSettings(**values)


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """``emulator_factory(**settings_overrides)`` starts an emulator; all are stopped after the test."""
    started: list[Emulator] = []

    def start(settings: EmulatorSettings | None = None, **overrides) -> Emulator:
        data_dir = tmp_path / f"emulator-{len(started)}"
        emulator = Emulator(settings or fast_settings(**overrides), data_dir=data_dir, host="127.0.0.1", port=0).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """A fresh, started emulator with one account (token ``test-token``)."""
    return emulator_factory()
