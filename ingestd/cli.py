"""The ``ingestd`` command."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from . import queue as q
from .client import StreamClient
from .config import Config, format_price, load_config, parse_duration
from .errors import APIError, ConfigError, IngestdError, RenderError
from .media_schema import UpdateRequest
from .storage import UniqueViolation, is_url, redact

EX_OK, EX_FAILURE, EX_CONFIG = 0, 1, 78


class CommandError(IngestdError):
    """A command could not do what was asked; the message says why."""


# -- helpers -----------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path:
    path = args.config or os.environ.get("INGESTD_CONFIG")
    if not path:
        raise CommandError("no config file: pass --config FILE or set INGESTD_CONFIG")
    return Path(path)


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    # json escapes C0 controls itself; DEL and C1 (a terminal reads \x9b as CSI) are escaped here, still valid JSON.
    sys.stdout.write(_C1_OR_DEL.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


_C1_OR_DEL = re.compile("[\x7f-\x9f]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """Control characters (but newline and tab) shown as ``\\x1b`` escapes: titles from the API never drive the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class _VisibleStream:
    """stdout for the commands: everything printed passes through ``visible``."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(visible(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _client(config: Config) -> StreamClient:
    return StreamClient.from_config(config.api)


def _queue(config: Config) -> q.JobQueue:
    return q.open_queue(config)


def _job(queue: q.JobQueue, ident: str) -> q.Job:
    job = queue.find(ident)
    if job is None:
        raise CommandError(f"no job matches {ident!r} (give the id or a unique prefix; see `ingestd jobs list`)")
    return job


# -- commands ----------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .service import run

    return run(_config_path(args))


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    for warning in config.warnings():
        print(visible(str(warning)), file=sys.stderr)
    missing = config.missing_folders()
    if missing:
        for problem in missing:
            print(visible(str(problem)), file=sys.stderr)
        return EX_CONFIG
    print(f"{_config_path(args)}: OK ({len(config.folders)} folder(s), {len(config.rules)} rule(s), {len(config.presets)} preset(s))")
    return EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    queue = _queue(config)
    counts = queue.counts()
    held = [{"id": j.id, "path": j.path, "reason": j.held_reason} for j in queue.list(states=(q.HELD,), limit=20)]
    activity = queue.activity()
    data = {"node": config.node_name, "queue": queue.where, "counts": counts, "activity": activity,
            "running_by_node": queue.running_by_node(), "oldest_queued_at": queue.oldest_queued_at(),
            "last_success_at": queue.last_success_at(), "held": held,
            "notifications": _notification_counts(config, queue)}
    if queue.shared:
        now = queue.now()
        data["daemons"] = [{"node": h.node, "hostname": h.hostname, "pid": h.pid, "started_at": h.started_at,
                            "seen_seconds_ago": round(now - h.seen_at, 1)} for h in queue.node_holders()]
    if args.json:
        _print_json(data)
        return EX_OK
    print(f"node {config.node_name}, queue {queue.where}")
    if queue.shared:
        print(visible("daemons: " + (", ".join(f"{d['node']} on {d['hostname']} (pid {d['pid']}, seen {d['seen_seconds_ago']:.0f}s ago)"
                                               for d in data["daemons"]) or "none running")))
        print("running per node: " + (", ".join(f"{node} {n}" for node, n in sorted(data["running_by_node"].items())) or "none"))
    print(", ".join(f"{n} {what}" for what, n in activity.items()) + "\n")
    print(_table([[state, str(n)] for state, n in counts.items()], ["state", "jobs"]))
    print(f"\nlast success: {_when(data['last_success_at'])}   oldest queued: {_when(data['oldest_queued_at'])}")
    for item in held:
        print(f"held {item['id'][:12]}  {item['path']}\n     {item['reason']}")
    if data["notifications"]:
        print("\nnotifications:")
        for label, n in data["notifications"].items():
            print(f"  {label}: {n[q.PENDING]} pending, {n[q.UNDELIVERABLE]} undeliverable")
    return EX_OK


def _notification_counts(config: Config, queue: q.JobQueue) -> dict[str, dict[str, int]]:
    """Pending and undeliverable notifications per target, configured targets included at zero."""
    from .notify import outbox_targets

    queue.outbox_targets = outbox_targets(config)
    return queue.notification_counts()


def cmd_notify_test(args: argparse.Namespace) -> int:
    from .notify import try_every_target

    config = _load(args)
    if not config.notify:
        raise CommandError("no notify: targets in the config; nothing to test")
    accepted = True
    for target, outcome in try_every_target(config):
        accepted &= outcome.accepted
        print(f"{'ok' if outcome.accepted else 'FAILED':<6}  {target.label}: {outcome.detail}", flush=True)
    return EX_OK if accepted else EX_FAILURE


def cmd_notify_list(args: argparse.Namespace) -> int:
    queue = _queue(_load(args))
    states = (q.PENDING, q.UNDELIVERABLE, q.SENT) if args.all else (q.PENDING, q.UNDELIVERABLE)
    notifications = queue.notifications(states=states, limit=args.limit)
    if args.json:
        _print_json([{"job_id": n.job_id, "event": n.event, "event_id": n.event_id, "target": n.label, "state": n.state,
                      "attempts": n.attempts, "last_error": n.last_error, "next_attempt_at": n.next_attempt_at,
                      "created_at": n.created_at, "sent_at": n.sent_at} for n in notifications])
        return EX_OK
    rows = [[n.job_id[:12], n.event, n.state, str(n.attempts),
             _when(n.next_attempt_at) if n.state == q.PENDING else _when(n.sent_at), n.label, n.last_error or ""]
            for n in notifications]
    print(_table(rows, ["job", "event", "state", "tries", "next/sent", "target", "last error"]) if rows
          else "no notifications waiting" + ("" if args.all else " or given up on"))
    return EX_OK


def cmd_notify_retry(args: argparse.Namespace) -> int:
    queue = _queue(_load(args))
    job_id = _job(queue, args.job).id if args.job else None
    count = queue.retry_notifications(job_id=job_id)
    print(f"{count} undeliverable notification(s) will be tried again by the running daemon" if count
          else "no undeliverable notifications")
    return EX_OK


def cmd_queue_migrate(args: argparse.Namespace) -> int:
    """Bring the queue's schema up to date, or move a SQLite queue into PostgreSQL."""
    config = _load(args) if args.config or os.environ.get("INGESTD_CONFIG") or not args.to else None
    if args.from_sqlite is None:
        where = q.queue_location(config)
        found, applied = q.migrate(where)
        shown = redact(str(where))
        print(f"queue {shown}: schema version {found} → {applied[-1]} (applied {', '.join(map(str, applied))})"
              if applied else f"queue {shown}: schema version {found}, up to date")
        return EX_OK
    url = args.to or (config.queue_url if config else None)
    if not url or not is_url(url):
        raise CommandError("--from-sqlite needs a postgresql:// URL: --to URL, or queue_url in the config")
    from .queuemove import move_sqlite_queue

    report = move_sqlite_queue(Path(args.from_sqlite), url)
    print(f"moved to {redact(url)}: " + ", ".join(f"{n} {table}" for table, n in report.copied.items())
          + f"; {report.requeued} job(s) left running were queued again")
    print(f"the SQLite queue is kept as {report.moved_aside}; set queue_url in the config before starting ingestd")
    return EX_OK


def cmd_jobs_list(args: argparse.Namespace) -> int:
    queue = _queue(_load(args))
    jobs = queue.list(states=tuple(args.state) if args.state else None, limit=args.limit)
    if args.json:
        _print_json([job.as_dict() for job in jobs])
        return EX_OK
    rows = [[j.id[:12], j.state, j.stage, j.node or "-", j.media_id or "-", _when(j.updated_at), j.relpath] for j in jobs]
    print(_table(rows, ["id", "state", "stage", "node", "media", "updated", "file"]) if rows else "no jobs")
    return EX_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    queue = _queue(_load(args))
    job = _job(queue, args.id)
    data = job.as_dict() | {"events": queue.events(job.id)}
    if args.json:
        _print_json(data)
        return EX_OK
    for key in ("id", "state", "stage", "path", "rule", "media_id", "media_status", "attempts", "held_reason", "error", "final_path"):
        if data.get(key) not in (None, ""):
            print(f"{key:>13}: {data[key]}")
    print(f"{'parts acked':>13}: {len(job.acked_parts)}   bytes sent: {job.bytes_sent} of {job.size}")
    print("\nhistory:")
    for event in data["events"]:
        detail = json.dumps(event["detail"], ensure_ascii=False) if event["detail"] else ""
        print(f"  {_when(event['at'])}  {event['event']}  {detail}")
    return EX_OK


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    """Bring failed or cancelled files (or a skipped duplicate) back and queue them again."""
    queue = _queue(_load(args))
    if args.all_failed == (args.id is not None):
        raise CommandError("give a job id, or --all-failed")
    if args.id is not None:
        print(_retry(queue, _job(queue, args.id)))
        return EX_OK
    failed = queue.list(states=(q.FAILED,), limit=1_000_000)
    problems = 0
    for job in failed:
        try:
            print(_retry(queue, job))
        except CommandError as exc:
            problems += 1
            print(f"ingestd: job {job.id[:12]}: {exc}", file=sys.stderr)
    print(f"{len(failed) - problems} of {len(failed)} failed job(s) queued again" if failed else "no failed jobs")
    return EX_FAILURE if problems else EX_OK


def _retry(queue: q.JobQueue, job: q.Job) -> str:
    from .filing import FilingError, move, report_path

    duplicate = job.state == q.SKIPPED and job.outcome == "duplicate"
    if job.state not in (q.FAILED, q.CANCELLED) and not duplicate:
        raise CommandError(f"job {job.id[:12]} is {job.state}; only failed, cancelled or duplicate jobs can be retried")
    source = Path(job.final_path) if job.final_path else Path(job.path)
    if not source.exists():
        raise CommandError(f"the file is no longer at {source}; drop it into the watched folder again instead")
    if source != Path(job.path) and os.path.lexists(job.path):
        raise CommandError(f"{job.path} already exists (a newer file?) and is never replaced; "
                           f"move it away first, or copy {source} into the watched folder under another name")
    try:
        queue.requeue(job.id, path=job.path)
    except UniqueViolation:  # the live-path index refuses a second live job for the same file
        raise CommandError(f"cannot retry: another job is already working on {job.path}") from None
    if source != Path(job.path):
        try:
            move(source, Path(job.path))
        except FilingError as exc:
            queue.finish(job.id, job.state, error=str(exc))
            raise CommandError(str(exc)) from exc
        report_path(source, failed=not duplicate).unlink(missing_ok=True)
        st = os.stat(job.path)
        queue.update(job.id, size=st.st_size, mtime_ns=q.storable(st.st_mtime_ns), inode=st.st_ino)
    return f"job {job.id[:12]} queued again: {job.path}"


def cmd_jobs_prune(args: argparse.Namespace) -> int:
    """Forget finished jobs now, as the daemon does after state.keep_finished."""
    queue = _queue(_load(args))
    before = queue.now() - args.older_than
    pruned = queue.prune_finished(before)
    print(f"pruned {pruned} finished job(s) that ended before {_when(before)}")
    return EX_OK


# How long `jobs cancel` waits for a running upload to stop at its next part before saying it will.
CANCEL_WAIT = 30.0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    config = _load(args)
    queue = _queue(config)
    job = _job(queue, args.id)
    if job.state not in q.LIVE_STATES:
        raise CommandError(f"job {job.id[:12]} is already {job.state}")
    claimed = queue.claim_job(job.id, q.worker_id("cli-cancel", config.node_name))
    if claimed is None:
        # A worker is uploading it: it stops after the part in flight, deletes the media and files the source.
        queue.request_cancel(job.id)
        deadline = time.monotonic() + CANCEL_WAIT
        while (job := queue.get(job.id)).state in q.LIVE_STATES and time.monotonic() < deadline:
            time.sleep(0.2)
        if job.state in q.LIVE_STATES:
            print(f"job {job.id[:12]}: cancel requested; it stops after the part being sent (see `ingestd jobs show {job.id[:12]}`)")
            return EX_OK
    else:
        with _client(config) as client:
            Pipeline(config, queue, client).cancel(claimed)
        job = queue.get(job.id)
    print(f"job {job.id[:12]} {job.state}; the file is in {job.final_path or 'place'}")
    return EX_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from .rules import explain, format_explanation

    config = _load(args)
    try:
        data = explain(config, Path(args.path).absolute())
    except RenderError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        _print_json(data)
    else:
        print(format_explanation(data))
    # No matching rule (or no file): the daemon would fail this file.
    return EX_FAILURE if data.get("error") else EX_OK


def cmd_upload(args: argparse.Namespace) -> int:
    from .oneshot import upload_one

    # Everything loaded so far lives until the command ends: out of the collector's way, no collection (during the
    # upload, or the last one at exit) walks it again. That last one alone cost about 70 ms of CPU.
    gc.freeze()
    config = _load(args)
    if args.force:
        # The same content uploaded before is uploaded again, as with duplicates: upload.
        config = config.model_copy(update={"duplicates": "upload"})
    return upload_one(config, Path(args.file), rule=args.rule)


def _meta(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--meta takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _media_rows(items) -> str:
    rows = [[m.id, m.status or "-", f"{m.duration:.1f}" if m.duration else "-", str(m.size or "-"), m.title or ""] for m in items]
    return _table(rows, ["id", "status", "seconds", "bytes", "title"]) if rows else "no media"


def cmd_media_list(args: argparse.Namespace) -> int:
    config = _load(args)
    filters = dict(search=args.search, status=args.status, tags=args.tag, metadata=_meta(args.meta),
                   sort_by=args.sort_by, order_by=args.order)
    with _client(config) as client:
        if args.all:
            items = list(client.iter_media(**filters))
            total = len(items)
        else:
            page = client.list_media(offset=args.offset, limit=args.limit, **filters)
            items, total = page.items, page.total
    if args.json:
        _print_json([m.model_dump(mode="json", exclude_none=True) for m in items])
        return EX_OK
    print(_media_rows(items))
    if not args.all and total > len(items):
        print(f"({len(items)} of {total}; --all lists every page)")
    return EX_OK


def cmd_media_get(args: argparse.Namespace) -> int:
    with _client(_load(args)) as client:
        media = client.get_media(args.id)
    if args.json:
        _print_json(media.model_dump(mode="json", exclude_none=True))
        return EX_OK
    print(_media_rows([media]))
    for key, value in (media.assets.model_dump(exclude_none=True) if media.assets else {}).items():
        if not key.endswith("iframe"):
            print(f"{key:>16}: {value}")
    return EX_OK


def cmd_media_cost(args: argparse.Namespace) -> int:
    qualities = [s.strip() for s in args.qualities.split(",") if s.strip()]
    with _client(_load(args)) as client:
        cost = client.media_cost(qualities, args.duration)
    if args.json:
        _print_json({"price": cost.price, "is_enough": cost.is_enough})
    else:
        print(f"price: {format_price(cost.price)}  ({'the balance covers it' if cost.is_enough else 'NOT covered by the balance'})")
    return EX_OK


def cmd_media_update(args: argparse.Namespace) -> int:
    meta = _meta(args.meta)
    fields = {k: v for k, v in {
        "title": args.title, "description": args.description, "tags": args.tag,
        "is_public": args.public, "player_id": args.player_theme_id,  # the spec's name, as AIOZ's clients send it
    }.items() if v is not None}
    if not fields and not meta:
        raise CommandError("nothing to update: give at least one of --title, --description, --tag, --meta, --public/--private, --player-theme-id")
    with _client(_load(args)) as client:
        if meta:
            # PATCH replaces the whole list: merge into what is there, so ingestd_job and other keys stay.
            merged = client.get_media(args.id).metadata_dict() | meta
            fields["metadata"] = [{"key": k, "value": v} for k, v in merged.items()]
        update = UpdateRequest.model_validate(fields)
        client.update_media(args.id, update)
    if args.json:
        _print_json({"id": args.id, "updated": update.body()})
    else:
        print(f"updated {args.id}")
    return EX_OK


def cmd_media_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CommandError("deleting a media cannot be undone: add --yes to confirm")
    with _client(_load(args)) as client:
        client.delete_media(args.id)
    if args.json:
        _print_json({"id": args.id, "deleted": True})
    else:
        print(f"deleted {args.id}")
    return EX_OK


def cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator import cli as emulator_cli

    return emulator_cli.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep)


# -- parser ------------------------------------------------------------------


def _duration(text: str) -> float:
    """An argparse type: durations as the config writes them (30d, 90m, 1h30m, or seconds)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def _with_config(parser: argparse.ArgumentParser, json_flag: bool = False) -> argparse.ArgumentParser:
    parser.add_argument("--config", "-c", metavar="FILE", help="config file (default: $INGESTD_CONFIG)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingestd",
        description="Watch folders for finished audio files and publish them to the AIOZ Stream media API.",
        epilog="Exit codes: 0 success, 1 failure, 2 usage error, 78 invalid config.",
    )
    parser.add_argument("--version", action="version", version=f"ingestd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, *, json_flag=False, config=True, parent=commands):
        sub = parent.add_parser(name, help=help, description=help)
        if config:
            _with_config(sub, json_flag)
        sub.set_defaults(func=func)
        return sub

    add("run", cmd_run, "run the daemon in the foreground (SIGTERM/SIGINT stop it, SIGHUP reloads the config)")
    add("check-config", cmd_check_config, "validate the config file; exit 78 with FILE:LINE: key: message per problem")
    add("status", cmd_status, "counts of jobs per state, held jobs and why, notifications pending or undeliverable", json_flag=True)

    jobs = commands.add_parser("jobs", help="list, inspect, retry or cancel jobs").add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    sub = add("list", cmd_jobs_list, "recent jobs, newest first", json_flag=True, parent=jobs)
    sub.add_argument("--state", action="append", choices=q.ALL_STATES, help="only jobs in this state (repeatable)")
    sub.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    add("show", cmd_jobs_show, "one job with its history", json_flag=True, parent=jobs).add_argument("id", help="job id or unique prefix")
    sub = add("retry", cmd_jobs_retry, "move a failed file (or a skipped duplicate, say of a media deleted since) back and queue it again", parent=jobs)
    sub.add_argument("id", nargs="?", help="job id or unique prefix")
    sub.add_argument("--all-failed", action="store_true", help="every failed job whose file is still in its failed folder")
    sub = add("prune", cmd_jobs_prune, "forget finished jobs (done, failed, cancelled, skipped) that ended long ago; "
              "the daemon does it by itself after state.keep_finished", parent=jobs)
    sub.add_argument("--older-than", type=_duration, required=True, metavar="DURATION", help="e.g. 30d, 12h")
    add("cancel", cmd_jobs_cancel, "stop a job (an upload in progress stops after its current part): delete its media, move the file to the failed folder", parent=jobs).add_argument("id")

    queue = commands.add_parser("queue", help="the job queue's schema, and moving it to PostgreSQL").add_subparsers(
        dest="queue_command", metavar="ACTION", required=True)
    sub = add("migrate", cmd_queue_migrate, "create or update the queue's tables (the daemon also does at start); with "
              "--from-sqlite, move a single host's queue into PostgreSQL without losing a job", parent=queue)
    sub.add_argument("--from-sqlite", metavar="STATE_DIR", help="the state_dir whose queue.sqlite3 to move (stop its daemon first)")
    sub.add_argument("--to", metavar="URL", help="postgresql://USER:PASS@HOST:PORT/DB (default: queue_url from the config)")

    notify = commands.add_parser("notify", help="test notification targets; list or retry notifications").add_subparsers(
        dest="notify_command", metavar="ACTION", required=True)
    add("test", cmd_notify_test, "send a sample event (\"event\": \"test\") to every notify target, print each outcome; "
        "exit 0 only when every target accepted it", parent=notify)
    sub = add("list", cmd_notify_list, "notifications waiting to be sent or given up on (undeliverable)", json_flag=True,
              parent=notify)
    sub.add_argument("--all", action="store_true", help="sent ones too")
    sub.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sub = add("retry", cmd_notify_retry, "try undeliverable notifications again (for another day)", parent=notify)
    sub.add_argument("job", nargs="?", help="only this job's (id or unique prefix)")

    sub = add("explain", cmd_explain, "which rule matches a file and the exact create request it would send", json_flag=True)
    sub.add_argument("path", help="an audio file inside a watched folder")

    sub = add("upload", cmd_upload, "upload one file now with a progress bar; exit 0 once its media is transcoded")
    sub.add_argument("file", help="a regular file (a symbolic link is not followed)")
    sub.add_argument("--rule", help="use this rule instead of matching one")
    sub.add_argument("--force", action="store_true", help="upload it even if the same content was uploaded before")

    media = commands.add_parser("media", help="the media API from the shell").add_subparsers(dest="media_command", metavar="ACTION", required=True)
    sub = add("list", cmd_media_list, "list and search media", json_flag=True, parent=media)
    sub.add_argument("--search", help="words in the title or description")
    sub.add_argument("--status", choices=("new", "transcoding", "done", "fail", "deleted"))
    sub.add_argument("--tag", action="append", help="only media with this tag (repeatable; all must match)")
    sub.add_argument("--meta", action="append", metavar="KEY=VALUE", help="only media with this metadata item (repeatable)")
    sub.add_argument("--sort-by", choices=("created_at", "updated_at", "title", "size"))
    sub.add_argument("--order", choices=("asc", "desc"))
    sub.add_argument("--limit", type=int, default=25, help="page size, 1-100 (default 25)")
    sub.add_argument("--offset", type=int, default=0)
    sub.add_argument("--all", action="store_true", help="page through every match")
    add("get", cmd_media_get, "one media with its asset URLs", json_flag=True, parent=media).add_argument("id")
    sub = add("cost", cmd_media_cost, "what transcoding would cost", json_flag=True, parent=media)
    sub.add_argument("--duration", type=_duration, required=True, help="length of the audio: 754, 90m, 1h30m")
    sub.add_argument("--qualities", required=True, help="comma-separated presets, e.g. standard,highest")
    sub = add("update", cmd_media_update, "change a media's title, description, tags, metadata or visibility", json_flag=True, parent=media)
    sub.add_argument("id")
    sub.add_argument("--title")
    sub.add_argument("--description")
    sub.add_argument("--tag", action="append", help="replaces the tags (repeatable)")
    sub.add_argument("--meta", action="append", metavar="KEY=VALUE",
                     help="sets this metadata item, keeping the others (ingestd_job among them); repeatable")
    visibility = sub.add_mutually_exclusive_group()
    visibility.add_argument("--public", dest="public", action="store_true", default=None)
    visibility.add_argument("--private", dest="public", action="store_false")
    sub.add_argument("--player-theme-id")
    sub = add("delete", cmd_media_delete, "delete a media (cannot be undone)", json_flag=True, parent=media)
    sub.add_argument("id")
    sub.add_argument("--yes", action="store_true", help="confirm the deletion")

    from .emulator import cli as emulator_cli

    sub = add("emulator", cmd_emulator, "serve the local stand-in for the media API", config=False)
    emulator_cli.add_arguments(sub)
    sub = add("demo", cmd_demo, "run the emulator and the daemon on a temporary folder, end to end", config=False)
    sub.add_argument("--keep", action="store_true", help="keep the temporary folder afterwards")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with contextlib.redirect_stdout(_VisibleStream(sys.stdout)):
            return args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(visible(str(problem)), file=sys.stderr)
        return EX_CONFIG
    except CommandError as exc:
        print(f"ingestd: {visible(str(exc))}", file=sys.stderr)
        return EX_FAILURE
    except APIError as exc:
        print(f"ingestd: the API said: {visible(str(exc))}", file=sys.stderr)
        return EX_FAILURE
    except IngestdError as exc:
        print(f"ingestd: {visible(str(exc))}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        sys.stderr.close()
        return EX_OK


if __name__ == "__main__":
    sys.exit(main())
