"""What the status listener (``status.listen``) shows: the page for people; :mod:`ingestd.status_server` serves it
with ``/metrics`` for Prometheus and ``/healthz`` for probes.

``/healthz`` answers 200 while the main loop keeps ticking, 503 once it has
stalled. An unreachable API is shown (``ok; API unreachable, paused``) but stays
200: restarting ingestd does not bring the API back, and the queue waits.
"""

from __future__ import annotations

import time
from html import escape
from typing import TYPE_CHECKING

from . import __version__
from . import queue as q
from .config import format_size

if TYPE_CHECKING:
    from .service import Service

RECENT = 15


# -- the page ----------------------------------------------------------------

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
th { color: #666; font-weight: normal; } .failed { color: #a00; } .muted { color: #888; }
progress { width: 14em; }
"""


def render_page(service: Service) -> str:
    queue = service.queue
    counts = queue.counts()
    alive, health = service.health()
    sections = [
        f"<h1>ingestd {escape(__version__)}</h1>",
        f'<p id="summary">{escape(service.status_line())}</p>',
        f'<p id="health" class="{"" if alive else "failed"}">{escape(health)}; up {_span(time.time() - service.started_at)}</p>',
        f'<p id="node">node {escape(service.config.node_name)}; queue {escape(queue.where)}</p>',
        "<h2>Jobs</h2>",
        _table(["state", "jobs"], [[state, str(n)] for state, n in counts.items()], ids=[f"count-{s}" for s in counts]),
        "<h2>In progress</h2>",
        _table(["file", "stage", "node", "attempts", "next step", "last error"],
               [[j.relpath, _stage(j), j.node or "", str(j.attempts), _when_next(j), j.error or ""]
                for j in queue.list(states=(q.RUNNING, q.QUEUED), limit=RECENT, newest_first=False)],
               empty="nothing in progress"),
        "<h2>Folders</h2>",
        _table(["folder", "state"], [[str(path), state] for path, state in service.watcher.folder_states().items()]),
        "<h2>Uploading</h2>",
        _uploads(service),
        "<h2>Settling</h2>",
        _table(["file", "bytes", "waiting for", "since"],
               [[p["path"], str(p["size"]), p["waiting_for"], _ago(p["since"])] for p in service.watcher.pending()],
               empty="no file is waiting to settle"),
    ]
    held = queue.list(states=(q.HELD,), limit=RECENT)
    if held:
        sections += ["<h2>Held</h2>", _table(["file", "reason"], [[j.path, j.held_reason or ""] for j in held])]
    notifications = queue.notification_counts()
    if notifications:
        sections += ["<h2>Notifications</h2>", _table(
            ["target", "pending", "undeliverable"],
            [[label, str(n[q.PENDING]), str(n[q.UNDELIVERABLE])] for label, n in notifications.items()],
            css="failed" if any(n[q.UNDELIVERABLE] for n in notifications.values()) else "")]
    done = queue.list(states=(q.DONE,), limit=RECENT)
    sections += ["<h2>Recently done</h2>", _table(
        ["file", "media", "title", "finished"],
        [[j.relpath, j.media_id or "", (j.media_body or {}).get("title", ""), _ago(j.finished_at)] for j in done],
        empty="nothing yet", css="done")]
    failed = queue.list(states=(q.FAILED, q.CANCELLED), limit=RECENT)
    sections += ["<h2>Recently failed</h2>", _table(
        ["file", "reason", "finished"],
        [[j.relpath, j.error or "", _ago(j.finished_at)] for j in failed],
        empty="nothing failed", css="failed")]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="5"><title>ingestd status</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _stage(job: q.Job) -> str:
    if job.stage == q.TRANSCODE:
        status = job.media_status or "new"
        return "transcoding" if status == "transcoding" else f"transcoding (media status {status})"
    return job.stage


def _when_next(job: q.Job) -> str:
    if job.state == q.RUNNING:
        return "now"
    wait = job.next_attempt_at - time.time()
    return f"in {_span(wait)}" if wait > 0 else "as soon as a worker is free"


def _uploads(service: Service) -> str:
    rows = []
    for job_id, (sent, total) in sorted(service.progress.snapshot().items()):
        job = service.queue.get(job_id)
        name = escape(job.relpath if job else job_id)
        percent = 100 * sent / total if total else 100
        rows.append(f'<tr><td>{name}</td><td><progress max="{total}" value="{sent}"></progress></td>'
                    f"<td>{percent:.0f}% of {format_size(total)}</td></tr>")
    if not rows:
        return '<p class="muted">no upload in progress</p>'
    return "<table><tr><th>file</th><th>progress</th><th></th></tr>" + "".join(rows) + "</table>"


def _table(headers: list[str], rows: list[list[str]], *, empty: str = "none", css: str = "",
           ids: list[str] | None = None) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    row_ids = [f' id="{escape(i)}"' for i in ids] if ids else [""] * len(rows)
    body = "".join(
        f"<tr{row_id}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row_id, row in zip(row_ids, rows)
    )
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _ago(timestamp: float | None) -> str:
    return f"{_span(time.time() - timestamp)} ago" if timestamp else ""


def _span(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
