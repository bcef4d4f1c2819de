"""What an emulator serves: accounts, prices, limits and the faults it injects."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

DEFAULT_RATES = {"standard": 0.005, "good": 0.01, "highest": 0.02, "lossless": 0.04}


@dataclass
class Account:
    """One set of credentials; each account sees only its own media."""

    token: str = "test-token"
    public_key: str = "test-public"
    secret_key: str = "test-secret"
    balance_usd: float = 100.0
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Faults:
    """Shares (0.0–1.0) of requests that misbehave, drawn from ``random.Random(seed)``.

    ``server_error`` and ``rate_limited`` answer before the request takes effect;
    ``drop_after_commit`` performs the request and then closes the connection without
    answering; ``slow`` waits ``slow_seconds`` before answering; ``transcode_fail``
    is the share of completed uploads that end in ``fail``; ``part_hash_mismatch``
    is the share of parts refused with ``400 hash mismatch`` as if damaged on the way.
    ``endpoints``, when set, limits the request faults to those endpoints:
    ``list``, ``create``, ``cost``, ``get``, ``update``, ``delete``, ``part``, ``complete``.

    Behaviours the live service might show, switched on whole: ``refused_list_filters`` are list
    filters answered with 400 (a service that does not know them), ``ignored_list_filters`` are
    silently not applied, and ``forbidden`` endpoints answer 403 although the credentials are good.
    """

    seed: int = 0
    server_error: float = 0.0
    rate_limited: float = 0.0
    drop_after_commit: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 2.0
    transcode_fail: float = 0.0
    part_hash_mismatch: float = 0.0
    endpoints: frozenset[str] | None = None
    refused_list_filters: frozenset[str] = frozenset()
    ignored_list_filters: frozenset[str] = frozenset()
    forbidden: frozenset[str] = frozenset()


@dataclass
class EmulatorSettings:
    """Read on every request, so tests may change them while the emulator runs."""

    accounts: list[Account] = field(default_factory=lambda: [Account()])
    min_part_size: int = 5 * 1024 * 1024
    transcode_delay: float = 1.0
    rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    rate_limit_per_minute: int | None = None
    faults: Faults = field(default_factory=Faults)
    # Refuse every form no official AIOZ client sends (the key pair without Basic, list filters as maps
    # or bare strings, part index 0, player_theme_id), so tests prove ingestd speaks only the proven forms.
    strict_official: bool = False
    # What missing or wrong credentials get: 401, or 403 as some gateways answer.
    bad_credentials_status: int = 401
