"""Shared fixtures: a real emulator on a loopback port, a real PostgreSQL server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingestd.emulator import Emulator, EmulatorSettings

from .postgres import PostgresServer, server_binaries

TEST_MIN_PART_SIZE = 64 * 1024
TEST_TRANSCODE_DELAY = 0.2


def fast_settings(**overrides) -> EmulatorSettings:
    """Emulator settings that keep tests quick: small parts, short transcoding.

    Strict by default: whatever ingestd sends in a test must be a form AIOZ's official clients send.
    """
    values = {"min_part_size": TEST_MIN_PART_SIZE, "transcode_delay": TEST_TRANSCODE_DELAY, "strict_official": True} | overrides
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of our own for the whole run; ``postgres.url()`` is a fresh schema in it."""
    bin_dir = server_binaries()
    if bin_dir is None:
        if os.geteuid() == 0:
            pytest.fail("PostgreSQL's server binaries are missing: install the Debian package postgresql "
                        "(`make test` does, as root)")
        pytest.skip("PostgreSQL's server binaries are not installed (Debian package postgresql; "
                    "`make test` installs it when run as root)")
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    return postgres.url()
