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
body { font: 15px/1.45 system-ui, sans-serif; margin: 1em auto; padding: 0 1em; max-width: 72em; color: #222;
       overflow-wrap: anywhere; }
h1 { font-size: 1.3em; margin: 0 0 .3em; } h2 { font-size: 1.05em; margin: 1.5em 0 .4em; }
p { margin: .2em 0; } a { color: #05c; }
table { border-collapse: collapse; width: 100%; }
td, th { padding: 3px 12px 3px 0; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { color: #666; font-weight: normal; } tr + tr td { border-top: 1px solid #eee; }
.failed, .failed td { color: #a00; } .muted { color: #888; } .todo { color: #555; font-size: .93em; }
progress { width: 10em; max-width: 100%; }
table.counts { width: auto; }
/* A phone: each row of a wide table becomes a card of "label: value" lines, nothing wider than the screen. */
@media (max-width: 640px) {
  body { padding: 0 .6em; }
  table:not(.counts), table:not(.counts) tbody, table:not(.counts) tr, table:not(.counts) td { display: block; width: auto; }
  table:not(.counts) tr:first-child:has(th) { display: none; }
  table:not(.counts) tr { padding: .4em 0; } table:not(.counts) tr + tr td { border-top: 0; }
  table:not(.counts) tr + tr { border-top: 1px solid #ddd; }
  table:not(.counts) td { padding: 1px 0; } table:not(.counts) td:empty { display: none; }
  table:not(.counts) td[data-label]::before { content: attr(data-label) ": "; color: #666; }
}
"""

# What a person can do about a held job, by the reason's prefix.
_HELD_ADVICE = {
    "budget:": "top up the account balance or raise upload.max_cost_usd, then reload; ingestd also re-checks by "
               "itself every upload.budget_recheck",
    "auth:": "put working credentials in the environment file (api.token, or the key pair), then restart ingestd",
    "recovery:": "nothing: ingestd asks the API again by itself; if it keeps refusing, check the API's status",
}
_HELD_DEFAULT = "see `ingestd jobs show ID`; `ingestd jobs cancel ID` gives the file up"


class _Html(str):
    """Markup made here (a link, a progress bar): put in a cell as is, where other text is escaped."""


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
        _table(["state", "jobs"], [[state, str(n)] for state, n in counts.items()], ids=[f"count-{s}" for s in counts],
               css="counts"),
        '<h2 id="in-progress">In progress</h2>',
        _in_progress(service),
    ]
    held = queue.list(states=(q.HELD,), limit=RECENT)
    if held:
        sections += ['<h2 id="held">Held: waiting for you</h2>', _table(
            ["file", "reason", "what to do"],
            [[j.relpath, j.held_reason or "", _Html(f'<span class="todo">{escape(_advice(j))}</span>')] for j in held],
            css="held")]
    sections += [
        "<h2>Folders</h2>",
        _table(["folder", "state"], [[str(path), _folder_state(service, path, state)]
                                     for path, state in service.watcher.folder_states().items()]),
        "<h2>Settling</h2>",
        _table(["file", "bytes", "waiting for", "since"],
               [[p["path"], str(p["size"]), p["waiting_for"], _ago(p["since"], time.time())] for p in service.watcher.pending()],
               empty="no file is waiting to settle"),
    ]
    notifications = queue.notification_counts()
    if notifications:
        sections += ["<h2>Notifications</h2>", _table(
            ["target", "pending", "undeliverable"],
            [[label, str(n[q.PENDING]), str(n[q.UNDELIVERABLE])] for label, n in notifications.items()],
            css="failed" if any(n[q.UNDELIVERABLE] for n in notifications.values()) else "")]
    now = queue.now()  # the jobs' times are on the queue's clock; the watcher's on this host's
    done = queue.list(states=(q.DONE,), limit=RECENT)
    sections += ['<h2 id="done">Recently done</h2>', _table(
        ["title", "file", "media", "finished"],
        [[_title_link(j), j.relpath, j.media_id or "", _ago(j.finished_at, now)] for j in done],
        empty="nothing yet", css="done")]
    failed = queue.list(states=(q.FAILED, q.CANCELLED), limit=RECENT)
    sections += ["<h2>Recently failed</h2>", _table(
        ["file", "reason", "finished"],
        [[j.relpath, j.error or "", _ago(j.finished_at, now)] for j in failed],
        empty="nothing failed", css="failed")]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="5"><title>ingestd status</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _in_progress(service: Service) -> str:
    """Queued and running jobs in one table; those sending parts carry their progress bar."""
    uploads = service.progress.snapshot()
    now = service.queue.now()
    rows = []
    for job in service.queue.list(states=(q.RUNNING, q.QUEUED), limit=RECENT, newest_first=False):
        sent, total = uploads.get(job.id, (None, None))
        if sent is not None and job.state == q.RUNNING:
            percent = 100 * sent / total if total else 100
            stage = _Html(f'uploading <progress max="{total}" value="{sent}"></progress> '
                          f"{percent:.0f}% of {escape(format_size(total))}")
        else:
            stage = _stage(job)
        rows.append([job.relpath, stage, job.node or "", str(job.attempts), _when_next(job, now), job.error or ""])
    return _table(["file", "stage", "node", "attempts", "next step", "last error"], rows, empty="nothing in progress",
                  css="in-progress")


def _advice(job: q.Job) -> str:
    reason = job.held_reason or ""
    advice = next((text for prefix, text in _HELD_ADVICE.items() if reason.startswith(prefix)), _HELD_DEFAULT)
    return advice.replace("ID", job.id[:12])


def _title_link(job: q.Job) -> str:
    """The media's title, linked to its player page when the API gave one."""
    media = job.media_body or {}
    title = media.get("title") or job.relpath
    player = (media.get("assets") or {}).get("hls_player_url") or (media.get("assets") or {}).get("dash_player_url")
    if not player or not str(player).startswith(("https://", "http://")):
        return title
    return _Html(f'<a href="{escape(player, quote=True)}">{escape(title)}</a>')


def _folder_state(service: Service, path, state: str) -> str:
    """``missing`` for a folder that is not there (an optional share not mounted yet says so)."""
    if state != "paused: folder does not exist":
        return state
    folder = next((f for f in service.config.folders if f.path == path), None)
    return "missing (optional: watched once it appears)" if folder is not None and folder.optional else "missing"


def _stage(job: q.Job) -> str:
    if job.stage == q.TRANSCODE:
        status = job.media_status or "new"
        return "transcoding" if status == "transcoding" else f"transcoding (media status {status})"
    return job.stage


def _when_next(job: q.Job, now: float) -> str:
    if job.state == q.RUNNING:
        return "now"
    wait = job.next_attempt_at - now
    return f"in {_span(wait)}" if wait > 0 else "as soon as a worker is free"


def _table(headers: list[str], rows: list[list[str]], *, empty: str = "none", css: str = "",
           ids: list[str] | None = None) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    row_ids = [f' id="{escape(i)}"' for i in ids] if ids else [""] * len(rows)
    body = "".join(
        f"<tr{row_id}>" + "".join(f'<td data-label="{escape(h)}">{_cell(c)}</td>' for h, c in zip(headers, row)) + "</tr>"
        for row_id, row in zip(row_ids, rows)
    )
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _cell(value: str) -> str:
    return value if isinstance(value, _Html) else escape(value)


def _ago(timestamp: float | None, now: float) -> str:
    return f"{_span(now - timestamp)} ago" if timestamp else ""


def _span(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
