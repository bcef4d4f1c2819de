"""Named points where the crash tests make the daemon kill itself with SIGKILL, or raise.

Set ``INGESTD_CRASH_AT=<point>`` (or ``<point>:<n>`` for its n-th visit) in the
daemon's environment to be killed there; ``INGESTD_RAISE_AT=<point>`` raises
``RuntimeError`` at every visit, the way a bug would. Unset, ``reach`` costs two
dictionary lookups.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = (
    "before_create", "after_create", "before_part_ack", "between_parts", "during_part",
    "before_complete", "after_complete", "during_polling", "before_move", "after_move",
    "after_notification_accepted",
)

_visits: dict[str, int] = {}
_lock = threading.Lock()


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("INGESTD_CRASH_AT")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    return name, int(count or 1)


def reach(point: str) -> None:
    if os.environ.get("INGESTD_RAISE_AT") == point:
        raise RuntimeError(f"raised at {point}, as INGESTD_RAISE_AT asks")
    target = _target()
    if target is None or target[0] != point:
        return
    with _lock:
        _visits[point] = _visits.get(point, 0) + 1
        if _visits[point] >= target[1]:
            os.kill(os.getpid(), signal.SIGKILL)
