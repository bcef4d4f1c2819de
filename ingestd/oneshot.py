"""``ingestd upload FILE``: the daemon's pipeline for one file, in the foreground, with a progress bar."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

from . import log as logsetup
from .log import secrets_of
from . import queue as q
from .client import StreamClient
from .config import Config, RuleMatch, format_size
from .cli import visible
from .errors import IngestdError
from .pipeline import Pipeline
from .progress import UploadProgress
from .notify import deliver_now, outbox_targets
from .notify import secrets_of as notify_secrets


def _config_for_rule(config: Config, rule_name: str | None) -> Config:
    if rule_name is None:
        return config
    rule = config.rule(rule_name)
    if rule is None:
        raise IngestdError(f"no rule named {rule_name!r} (rules: {', '.join(r.name for r in config.rules) or 'none'})")
    return config.model_copy(update={"rules": [rule.model_copy(update={"match": RuleMatch()})]})


def upload_one(config: Config, file: Path, *, rule: str | None = None) -> int:
    path = file.absolute()
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        print(f"ingestd: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if not stat.S_ISREG(st.st_mode):
        # Links are not followed, as the daemon never follows one out of a watched folder.
        hint = f"; to upload the file it points to, name it: {path.resolve()}" if stat.S_ISLNK(st.st_mode) else ""
        print(visible(f"ingestd: cannot upload {path}: it is {_kind_of(st.st_mode)}, not a file{hint}"), file=sys.stderr)
        return 1
    config = _config_for_rule(config, rule)
    # The progress bar is the report; log lines on stderr only when something goes wrong.
    logsetup.configure(format=config.log.format, level="warning")
    logsetup.redactor.update(secrets_of(config))
    logsetup.redactor.set("notify", notify_secrets(config))
    folder = config.folder_for(path)
    root = folder.path if folder else path.parent
    queue = q.open_queue(config)
    queue.outbox_targets = outbox_targets(config)
    owner = q.worker_id("upload", config.node_name)
    # Asked for by name: uploaded even if the same file's job ended a moment ago (no live job is ever doubled).
    job = queue.live_job_for(str(path)) or queue.enqueue(
        path=str(path), root=str(root), relpath=str(path.relative_to(root)), size=st.st_size,
        mtime_ns=st.st_mtime_ns, inode=st.st_ino, same_file_window=0,
    ) or queue.live_job_for(str(path))
    bar = UploadProgress(visible(path.name))
    with StreamClient.from_config(config.api) as client:
        pipeline = Pipeline(config, queue, client, on_progress=bar.bytes, move_files=folder is not None)
        try:
            job = _run_to_end(queue, pipeline, job, owner, bar)
        except KeyboardInterrupt:
            bar.close(finished=False)
            # Give the job back now, not when its lease runs out: the daemon (or the next upload) resumes it.
            queue.release_if_owned(job.id, owner)
            bar.line(_interrupted(queue.get(job.id), path))
            return 130
    deliver_now(queue, config, job.id)
    bar.close(finished=job.state == q.DONE)
    if job.state == q.DONE:
        media = job.media_body or {}
        bar.line(visible(f"done: media {job.media_id} ({media.get('title', '')})"))
        for key in ("hls_url", "dash_url", "hls_player_url"):
            if (media.get("assets") or {}).get(key):
                print(f"{key}: {media['assets'][key]}")
        return 0
    reason = job.held_reason if job.state == q.HELD else job.error
    bar.line(visible(f"{job.state}: {reason}"))
    return 1


def _kind_of(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe"), (stat.S_ISLNK, "a symbolic link"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def _interrupted(job: q.Job | None, path: Path) -> str:
    """What Ctrl-C left behind, and how to go on from there."""
    if job is None or job.state in q.FINAL_STATES:
        return "interrupted"
    resume = (f"run `ingestd upload {path}` again to resume from there "
              "(a running daemon on this queue resumes it by itself)")
    if not job.media_id:
        return visible(f"interrupted before anything was uploaded; job {job.id[:12]} is kept in the queue: {resume}")
    return visible(f"interrupted: kept media {job.media_id} and {len(job.acked_parts)} uploaded part(s) "
                   f"({format_size(job.bytes_sent)} of {format_size(job.size)}); {resume}")


def _run_to_end(queue: q.JobQueue, pipeline: Pipeline, job: q.Job, owner: str, bar: UploadProgress) -> q.Job:
    """Run the job in the foreground until it ends or is held; the daemon may run some of its steps meanwhile."""
    last_status = None
    while True:
        claimed = queue.claim_job(job.id, owner)
        if claimed is None:
            job = queue.get(job.id)
            if job.state in q.FINAL_STATES:
                break
            time.sleep(0.5)  # the daemon holds this job's lease; let it finish its step
            continue
        pipeline.run(claimed, owner)
        job = queue.get(job.id)
        if job.state in q.FINAL_STATES or job.state == q.HELD:
            break
        if job.media_status and job.media_status != last_status:
            last_status = job.media_status
            bar.transcoding(job.media_id, job.media_status)
        time.sleep(max(0.0, min(job.next_attempt_at - queue.now(), 5.0)))
    return job
