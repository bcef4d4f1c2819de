"""One job's way from a ready file to a published media, one recorded stage at a time.

    prepare → create → upload → complete → transcode → publish → file

Each stage is idempotent against the server's state and is written to the
queue before the next begins, so running a job again after a crash, at any
point, continues it: a lost create answer is recovered by listing media with
the job's ``ingestd_job`` metadata, acknowledged parts are not sent again, and a
repeated complete is settled by reading the media's status.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from . import crashpoints, filing, queue as q
from .client import Part, StreamClient, plan_parts
from .config import Config, FolderConfig, UploadConfig, format_price
from .errors import APIError, AuthError, NotFoundError, RejectedError, RenderError, SourceChangedError, TransientError
from .media_schema import CreateRequest, UpdateRequest
from .probe import ProbeError, probe
from .rules import render
from .sidecar import SidecarError, find_sidecar, load_sidecar

log = structlog.get_logger("ingestd.pipeline")

FILING_RETRY = 60.0
POLL_CAP = 300.0
PART_SEND_TRIES = 3


class JobFailed(Exception):
    """This job cannot succeed as it stands; ``reason`` says why in words a person can act on."""

    def __init__(self, reason: str, *, hint: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class JobHeld(Exception):
    """This job waits for something outside to change (budget, credentials); re-checked after ``recheck_after``."""

    def __init__(self, reason: str, recheck_after: float | None):
        super().__init__(reason)
        self.reason = reason
        self.recheck_after = recheck_after


class _Reschedule(Exception):
    """Not an error: the job has nothing to do until ``delay`` has passed (e.g. between status polls)."""

    def __init__(self, delay: float, event: str, reason: str | None = None):
        self.delay = delay
        self.event = event
        self.reason = reason  # shown as the job's error while it waits, when the wait needs explaining


class Breaker:
    """Opens after consecutive transient failures across all jobs, so an API outage doesn't burn every job's attempts."""

    @classmethod
    def for_upload(cls, upload: UploadConfig) -> Breaker:
        return cls(cooldown=upload.outage_pause, max_cooldown=max(upload.outage_pause, upload.retry_delay_max))

    def __init__(self, threshold: int = 5, cooldown: float = 30.0, max_cooldown: float = 600.0):
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._cooldown = cooldown

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def seconds_left(self) -> float:
        return max(0.0, self._open_until - time.monotonic())

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._cooldown = self.base_cooldown
            self._open_until = 0.0

    def failure(self) -> bool:
        """Count a transient failure; True when the breaker is (now) open."""
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold and time.monotonic() >= self._open_until:
                self._open_until = time.monotonic() + self._cooldown
                self._cooldown = min(self._cooldown * 2, self.max_cooldown)
                log.warning("api_unreachable_pausing", consecutive_failures=self._failures, pause_seconds=round(self.seconds_left()))
            return self._failures >= self.threshold


@dataclass
class Progress:
    """Live byte counts of uploads in flight, for the status page and the progress bar."""

    total: int
    sent: int = 0


class Pipeline:
    def __init__(self, config: Config, queue: q.JobQueue, client: StreamClient, *, breaker: Breaker | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None, rng: random.Random | None = None,
                 stopping: threading.Event | None = None, move_files: bool = True,
                 former_folders: dict[str, FolderConfig] | None = None):
        self.config = config
        self.queue = queue
        self.client = client
        self.breaker = breaker or Breaker.for_upload(config.upload)
        self.on_progress = on_progress
        self.rng = rng or random.Random()
        # Set when the daemon stops: parts in flight finish, no new part starts.
        self.stopping = stopping or threading.Event()
        # False for one-shot uploads of files outside the watched folders: those stay where they are.
        self.move_files = move_files
        # The lease this thread works under (outcomes reach filing from many places), and jobs whose lease was lost.
        self._held = threading.local()
        self._lost: set[str] = set()
        # Folders a reload removed: a job already under way there is still filed into that folder's own done/failed.
        self.former_folders = former_folders or {}

    # -- entry point -------------------------------------------------------

    def run(self, job: q.Job, owner: str) -> None:
        """Run a claimed job as far as it can go now. Every outcome is recorded in the queue."""
        self._held.owner = owner
        with _LeaseKeeper(self.queue, job.id, owner, on_lost=self._lost.add):
            try:
                self._run(job, owner)
            except Exception as exc:
                # Raised while an outcome was being recorded (a failure's filing, say): bounded like any other.
                self._unexpected(self.queue.get(job.id), exc, log.bind(job_id=job.id, path=job.path))
        self._lost.discard(job.id)

    def _run(self, job: q.Job, owner: str) -> None:
        bound = log.bind(job_id=job.id, path=job.path, attempt=job.attempts)
        steps = {
            q.PREPARE: self._prepare, q.CREATE: self._create, q.UPLOAD: self._upload, q.COMPLETE: self._complete,
            q.TRANSCODE: self._transcode, q.PUBLISH: self._publish, q.FILE: self._file,
        }
        try:
            while job.state == q.RUNNING:
                # Before creating a media, make sure the job is still ours (filing checks for itself).
                if job.id in self._lost or (job.stage == q.CREATE and not self.queue.renew(job.id, owner)):
                    # Another worker (maybe on another host) took the job after our lease ran out: it is theirs now.
                    bound.warning("lease_lost")
                    return
                bound = bound.bind(stage=job.stage, media_id=job.media_id)
                stage = job.stage
                if job.cancel_requested and job.outcome != q.CANCELLED:
                    raise _Cancel
                steps[stage](job, owner, bound)
                job = self.queue.get(job.id)
                if job.stage != stage and job.attempts > 1:
                    # upload.max_attempts counts the tries of one step: a step that succeeded starts the count over.
                    self.queue.update(job.id, attempts=1)
                    job.attempts = 1
        except _Stop:
            pass
        except _Cancel:
            bound.info("job_cancelling")
            try:
                self.cancel(self.queue.get(job.id))
            except (APIError, filing.FilingError) as exc:
                bound.warning("cancel_unfinished", error=str(exc))
        except _Reschedule as wait:
            self.queue.release(job.id, delay=wait.delay, refund_attempt=True, event=wait.event, error=wait.reason)
        except JobHeld as held:
            bound.warning("job_held", reason=held.reason)
            self.queue.hold(job.id, held.reason, recheck_after=held.recheck_after)
        except JobFailed as failed:
            self._fail(self.queue.get(job.id), failed, bound)
        except AuthError as exc:
            self._auth_refused(job, exc, bound)
        except TransientError as exc:
            self._retry_later(self.queue.get(job.id), exc, bound)
        except RejectedError as exc:
            self._fail(self.queue.get(job.id), JobFailed(f"the API refused {exc.method} {exc.path}: {exc.message}"), bound)
        except filing.FilingError as exc:
            bound.error("filing_failed", error=str(exc))
            self.queue.release(job.id, delay=self._filing_retry(), error=str(exc), refund_attempt=True, event="filing_blocked")
        except Exception as exc:
            # A bug, or the machine (EMFILE, ENOMEM): retried like a transient error, and never for ever.
            self._unexpected(self.queue.get(job.id), exc, bound)

    # -- stages ------------------------------------------------------------

    def _prepare(self, job: q.Job, owner: str, bound) -> None:
        path = Path(job.path)
        folder = self._folder(job)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            self.queue.finish(job.id, q.FAILED, error="the file disappeared before it could be uploaded")
            bound.warning("file_vanished")
            raise _Stop from None
        except OSError as exc:
            raise JobFailed(f"cannot read the file: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            # Replaced by a symlink, FIFO or folder since it was queued: never followed or read, left where it is.
            self.queue.finish(job.id, q.SKIPPED, outcome="not_a_file", error="no longer a regular file; ignored")
            bound.warning("not_a_regular_file_ignored")
            raise _Stop
        if _stat_key(st) != _job_key(job):
            # Written to again after it looked settled: wait for it to settle anew.
            self.queue.update(job.id, **_stat_fields(st), event="file_changed")
            raise _Reschedule(self._settle(job), "waiting_for_file_to_settle")
        self._check_movable(path, st, folder)
        if st.st_size == 0:
            raise JobFailed("the file is empty (0 bytes)", hint="export or copy the file again")
        max_size = self.config.upload.max_file_size
        if st.st_size > max_size:
            raise JobFailed(f"the file is {st.st_size} bytes, more than the {max_size} bytes the API accepts")
        try:
            audio = probe(path)
        except ProbeError as exc:
            raise JobFailed(str(exc), hint="check that the file plays, then drop it again") from exc
        except PermissionError as exc:
            raise JobFailed(f"cannot read the file: {exc.strerror}", hint="give the ingestd user read access") from exc
        sidecar_path = Path(job.sidecar) if job.sidecar else (find_sidecar(path) if folder is None or folder.sidecar != "off" else None)
        sidecar = None
        if sidecar_path is not None:
            try:
                sidecar = load_sidecar(sidecar_path)
            except SidecarError as exc:
                raise JobFailed(str(exc), hint="fix the sidecar and drop both files again") from exc
        try:
            rendered = render(self.config, path, Path(job.root), job_id=job.id, audio=audio, sidecar=sidecar)
        except RenderError as exc:
            if exc.rule is None and self.config.unmatched == "ignore":
                self.queue.finish(job.id, q.SKIPPED, outcome="unmatched", error=str(exc))
                bound.info("file_unmatched_ignored")
                raise _Stop from None
            raise JobFailed(str(exc)) from exc
        upload = self.config.upload
        prepared = dict(sidecar=str(sidecar_path) if sidecar_path else None, rule=rendered.rule,
                        request=rendered.request.body(), publish_when_done=int(rendered.make_public_when_done),
                        quality_names=rendered.quality_names, duration=audio.duration,
                        chunk_size=upload.chunk_size, part_index_base=upload.part_index_base)
        earlier, content_key = (self._duplicate_of(job, path, upload.chunk_size) if self.config.duplicates == "skip"
                                else (None, None))
        prepared["content_key"] = content_key
        if earlier is not None:
            self.queue.update(job.id, **prepared, event="prepared", detail={"rule": rendered.rule})
            self._skip_duplicate(self.queue.get(job.id), earlier, bound)
            raise _Stop
        self._check_budget(rendered.quality_names, audio.duration, bound)
        self.queue.update(job.id, **prepared, stage=q.CREATE, event="prepared", detail={"rule": rendered.rule})

    def _check_movable(self, path: Path, st: os.stat_result, folder: FolderConfig | None) -> None:
        """Hold a file that could be published but never filed: ingestd may not take it out of its folder."""
        if not self.move_files or folder is None:
            return
        reason = filing.why_unmovable(path, st)
        if reason is not None:
            raise JobHeld(f"permissions: ingestd cannot move files out of {path.parent}: {reason};"
                          " the file goes on by itself once that is done", self._filing_retry())

    def _duplicate_of(self, job: q.Job, path: Path, chunk_size: int) -> tuple[q.Job | None, str | None]:
        """A published job with the same content whose media is still there and done, and this file's content key.

        The key is a digest of the per-part MD5s (the ones the server acknowledges), so an upload yields it
        for free; this file is read for it only when another job has the same size. While an identical file
        ahead of this one is still on its way, this one waits for its outcome: a copy of a file that then
        fails is uploaded after all, never filed as done.
        """
        if not self.queue.has_other_of_size(job.size, job.id):
            return None, None
        layout = _layout(plan_parts(job.size, chunk_size))
        md5s = _part_md5s(path, layout)
        key = _content_key(layout, md5s)
        # Jobs cut with another chunk_size (the config changed since) have keys made under their own layout.
        keys = [key] + [_content_key(other, _part_md5s(path, other))
                        for other in {_layout(plan_parts(job.size, size))
                                      for size in self.queue.chunk_sizes_of_size(job.size, job.id)} - {layout}]
        # An identical file ahead is found by its content key; only those ahead whose key is not known yet are read.
        # (Comparing with every job of the same size made a backlog of equal-sized files quadratic.)
        ahead = next(filter(None, (self.queue.ahead_with_content(job, k) for k in keys)), None)
        if ahead is None:
            ahead = next((other for other in self.queue.ahead_without_content_key(job)
                          if _same_content(other, key, layout, md5s)), None)
        if ahead is not None:
            raise _Reschedule(max(self.config.upload.poll_interval, 0.5), "waiting_for_identical_file",
                              reason=f"waiting for job {ahead.id[:12]} ({ahead.relpath}), which has the same content")
        for earlier in (done for k in keys for done in self.queue.done_jobs_with_content(k, job.id)):
            if self._media_still_done(earlier.media_id):
                return earlier, key
        return None, key

    def _media_still_done(self, media_id: str) -> bool:
        """Whether an earlier upload still stands on the service (it may have been deleted from the dashboard)."""
        try:
            return self.client.get_media(media_id).status == "done"
        except NotFoundError:
            return False

    def _plan(self, job: q.Job) -> list[tuple[int, int, int]]:
        """The job's parts as (index, start, length), in the layout fixed when it was prepared."""
        if job.chunk_size is None or job.part_index_base is None:
            # Prepared by an ingestd that did not record the layout: read it off the acknowledged parts.
            upload = self.config.upload
            chunk_size, base = _layout_of(job.size, self.queue.acked_spans(job.id)) or (upload.chunk_size, upload.part_index_base)
            self.queue.update(job.id, chunk_size=chunk_size, part_index_base=base)
            job.chunk_size, job.part_index_base = chunk_size, base
        return plan_parts(job.size, job.chunk_size, job.part_index_base)

    def _check_budget(self, qualities: list[str], duration: float | None, bound) -> None:
        limit = self.config.upload.max_cost_usd
        if not qualities or not duration:
            return
        try:
            cost = self.client.media_cost(qualities, duration)
        except RejectedError as exc:
            if limit is None:
                bound.warning("cost_unavailable", error=exc.message)
                return
            raise JobHeld(f"budget: the transcode price could not be checked ({exc.message})", self.config.upload.budget_recheck) from exc
        if not cost.is_enough:
            raise JobHeld(f"budget: the account balance does not cover the transcode price of {format_price(cost.price)}", self.config.upload.budget_recheck)
        if limit is not None and cost.price > limit:
            raise JobHeld(f"budget: transcoding costs {format_price(cost.price)}, more than upload.max_cost_usd ({format_price(limit)})", self.config.upload.budget_recheck)
        bound.info("cost_checked", price=cost.price)

    def _create(self, job: q.Job, owner: str, bound) -> None:
        if job.create_sent:
            # A create may have reached the server although its answer was lost: find it before creating again.
            title = (job.request_body or {}).get("title")
            try:
                found = self.client.find_by_metadata("ingestd_job", job.id, title=title)
            except RejectedError as exc:
                # Creating again might make a second media; failing might orphan the first. Wait for the list to work.
                raise JobHeld(f"recovery: the API refused to list media ({exc.message}), so whether this file's media was"
                              " created cannot be told yet", self.config.upload.retry_delay_max) from exc
            if found:
                keep, extra = found[0], found[1:]
                for media in extra:
                    self._delete_media(media.id, bound)
                self.queue.update(job.id, media_id=keep.id, media_status=keep.status, stage=q.UPLOAD,
                                  event="media_recovered", detail={"media_id": keep.id})
                bound.info("media_recovered", media_id=keep.id)
                return
        request = CreateRequest.model_validate(job.request_body)
        self.queue.update(job.id, create_sent=1)
        crashpoints.reach("before_create")
        try:
            media = self.client.create_media(request)
        except (RejectedError, AuthError):
            # An answer, even a refusal, settles it: no media was made, so there is nothing to recover later.
            self.queue.update(job.id, create_sent=0)
            raise
        crashpoints.reach("after_create")
        self.breaker.success()
        self.queue.update(job.id, media_id=media.id, media_status=media.status, stage=q.UPLOAD,
                          event="media_created", detail={"media_id": media.id})
        bound.info("media_created", media_id=media.id, title=request.title)

    def _upload(self, job: q.Job, owner: str, bound) -> None:
        path = Path(job.path)
        self._ensure_unchanged(job, bound)
        upload = self.config.upload
        plan = self._plan(job)
        todo = [Part(path, index, start, length, job.size) for index, start, length in plan if index not in job.acked_parts]
        md5s = dict(job.acked_parts)
        started = time.monotonic()
        if todo:
            progress = Progress(job.size, sent=sum(length for index, _, length in plan if index in job.acked_parts))
            lock = threading.Lock()

            def send(part: Part) -> None:
                if self.stopping.is_set():
                    raise _Reschedule(0.0, "checkpointed_for_shutdown")
                if job.id in self._lost:
                    raise _Stop
                if self.queue.cancel_requested(job.id):
                    raise _Cancel
                def advance(n: int) -> None:
                    crashpoints.reach("during_part")
                    with lock:
                        progress.sent += n
                        sent = progress.sent
                    if self.on_progress:
                        self.on_progress(job.id, sent, job.size)

                md5 = self._send_part(job, part, advance, bound)
                crashpoints.reach("before_part_ack")
                self.queue.ack_part(job.id, part.index, part.start, part.length, md5)
                md5s[part.index] = md5
                self.breaker.success()
                bound.debug("part_acknowledged", part=part.index, parts=len(plan))
                crashpoints.reach("between_parts")

            if upload.parallel_parts > 1 and len(todo) > 1:
                with ThreadPoolExecutor(max_workers=upload.parallel_parts, thread_name_prefix=f"part-{job.id[:8]}") as pool:
                    for future in [pool.submit(send, part) for part in todo]:
                        future.result()
            else:
                for part in todo:
                    send(part)
        content_key = _content_key(_layout(plan), [md5s[i] for i, _, _ in plan])
        if self.config.duplicates == "skip":
            earlier = self.queue.claim_content(job.id, content_key)
            if earlier is not None and earlier.state in q.LIVE_STATES:
                # The same content finished uploading elsewhere first (another worker or host): see how it ends.
                raise _Reschedule(max(self.config.upload.poll_interval, 0.5), "waiting_for_identical_file",
                                  reason=f"waiting for job {earlier.id[:12]} ({earlier.relpath}), which has the same content")
            if earlier is not None and earlier.state == q.DONE and self._media_still_done(earlier.media_id):
                # One media is kept: this upload is the duplicate.
                self._delete_media(job.media_id, bound)
                self.queue.update(job.id, content_key=content_key)
                self._skip_duplicate(self.queue.get(job.id), earlier, bound)
                raise _Stop
            if earlier is not None:
                # The earlier upload no longer stands (its media was deleted): this one takes its place.
                self.queue.hand_content_over(content_key, from_job=earlier.id, to_job=job.id)
        self.queue.update(job.id, stage=q.COMPLETE, content_key=content_key,
                          event="upload_finished", detail={"parts": len(plan)})
        sent = sum(part.length for part in todo)
        seconds = time.monotonic() - started
        bound.info("upload_finished", parts=len(plan), parts_sent=len(todo), bytes_sent=sent,
                   mb_per_s=round(sent / seconds / 1e6, 1) if todo and seconds > 0 else None)

    def _send_part(self, job: q.Job, part: Part, advance: Callable[[int], None], bound) -> str:
        for attempt in range(1, PART_SEND_TRIES + 1):
            try:
                return self.client.upload_part(job.media_id, part, on_progress=advance)
            except SourceChangedError:
                self._ensure_unchanged(job, bound)
                raise _Reschedule(self._settle(job), "waiting_for_file_to_settle") from None
            except RejectedError as exc:
                # A hash the server disagrees with means the bytes changed on the way: read and send again.
                if "hash" not in exc.message.lower() or attempt == PART_SEND_TRIES:
                    raise
                bound.warning("part_hash_rejected", part=part.index, attempt=attempt)
                self._ensure_unchanged(job, bound)
        raise AssertionError("unreachable")

    def _complete(self, job: q.Job, owner: str, bound) -> None:
        crashpoints.reach("before_complete")
        try:
            self.client.complete_upload(job.media_id)
        except NotFoundError:
            raise JobFailed(f"media {job.media_id} vanished from the service before the upload was completed") from None
        except RejectedError as exc:
            media = self.client.get_media(job.media_id)
            if media.status in ("new", None):
                # The server is missing some parts: send the whole file again (re-sent parts replace old ones).
                self.queue.forget_parts(job.id)
                self.queue.update(job.id, stage=q.UPLOAD, event="complete_rejected", detail={"message": exc.message})
                bound.warning("complete_rejected_resending", message=exc.message)
                return
            bound.info("complete_already_done", status=media.status)
        crashpoints.reach("after_complete")
        self.breaker.success()
        self.queue.update(job.id, stage=q.TRANSCODE, transcode_started=self.queue.now(), media_status="transcoding",
                          event="upload_completed")
        bound.info("upload_completed_transcoding")

    def _transcode(self, job: q.Job, owner: str, bound) -> None:
        crashpoints.reach("during_polling")
        media = self.client.get_media(job.media_id)
        self.breaker.success()
        media_json = media.model_dump(mode="json", exclude_none=True)
        if media.status == "done":
            # Nothing to publish: straight on to filing, one step fewer.
            next_stage = (q.PUBLISH, None) if job.publish_when_done else (q.FILE, q.DONE)
            self.queue.update(job.id, media_status="done", media=media_json, stage=next_stage[0], outcome=next_stage[1],
                              event="transcoded")
            bound.info("media_transcoded", duration=media.duration)
            return
        if media.status == "fail":
            self.queue.update(job.id, media_status="fail", media=media_json)
            raise JobFailed("the service could not transcode this file (media status 'fail')",
                            hint="check that the file plays and is a supported audio format")
        now = self.queue.now()
        elapsed = now - (job.transcode_started or now)
        if elapsed > self.config.upload.transcode_timeout:
            raise JobFailed(f"transcoding did not finish within {self.config.upload.transcode_timeout:.0f}s (status {media.status!r})")
        self.queue.update(job.id, media_status=media.status, media=media_json)
        # Poll often at first, then less: a long transcode is checked about ten times per elapsed span.
        interval = min(max(self.config.upload.poll_interval, elapsed / 10), POLL_CAP)
        raise _Reschedule(interval, "polling")

    def _publish(self, job: q.Job, owner: str, bound) -> None:
        self.client.update_media(job.media_id, UpdateRequest(is_public=True))
        bound.info("media_published")
        self.queue.update(job.id, stage=q.FILE, outcome=q.DONE, event="published")

    def _file(self, job: q.Job, owner: str, bound) -> None:
        crashpoints.reach("before_move")
        failed = job.outcome in (q.FAILED, q.CANCELLED)
        folder = self._folder(job)
        if folder is None and not self.move_files:
            self._finish(job, bound)
            return
        dest_dir = self._dest_dir(job, folder, failed)
        target = Path(job.final_path) if job.final_path else filing.destination(dest_dir, job.relpath, job.id)
        if not job.final_path:
            self.queue.update(job.id, final_path=str(target))
        if failed and job.create_sent and not job.media_id:
            job = self._recover_lost_create(job, bound)
        if failed and job.media_id and not self.config.keep_failed_media:
            # Deleted here, at the one stage every failure passes through, so a lost DELETE is retried with the job.
            self._delete_media(job.media_id, bound)
        source = Path(job.path)
        if not os.path.lexists(source) and not target.exists():
            # Deleted by someone while it was ours: nothing to move, and a report beside nothing would mislead.
            bound.warning("file_vanished_before_filing")
            self._finish(job, bound)
            return
        owner = owner or getattr(self._held, "owner", "")
        if owner and not self.queue.renew(job.id, owner):
            # Only the lease holder moves a file: a worker that lost its lease leaves the file to the new holder.
            bound.warning("lease_lost_before_filing")
            self._lost.add(job.id)
            return
        if os.path.lexists(source) and not _is_jobs_file(source, job):
            if target.exists():
                bound.info("filed_before_restart", moved_to=str(target))
                self._finish(job, bound, final_path=str(target))
                return
            self._replaced_before_filing(job, bound)
            return
        report = self._error_report(job) if failed else self._done_report(job)
        try:
            filing.file_away(source=source, sidecar=Path(job.sidecar) if job.sidecar else None, target=target,
                             report=report, failed=failed, expect=_job_key(job))
        except filing.SourceReplaced:
            self._replaced_before_filing(job, bound)
            return
        except filing.TargetExists:
            # Someone put a file where this one was going: choose another name next time, never replace theirs.
            self.queue.update(job.id, final_path=None, event="destination_taken")
            raise
        crashpoints.reach("after_move")
        # The report travels with the job's end into the outbox: notifications say what the file beside it says.
        self._finish(job, bound, final_path=str(target), report=report)
        if failed:
            bound.error("job_failed", reason=job.error, moved_to=str(target))
        else:
            bound.info("job_done", moved_to=str(target), media_id=job.media_id)

    def _recover_lost_create(self, job: q.Job, bound) -> q.Job:
        """A job failing or cancelled after a create whose answer was lost: find that media by the job's id, so it
        is deleted (or kept and known) rather than left behind with no job to know it."""
        try:
            found = self.client.find_by_metadata("ingestd_job", job.id, title=(job.request_body or {}).get("title"))
        except RejectedError as exc:
            # The service will not say whether the create took effect: file the failure all the same, saying where to look.
            note = (f"; a media for this file may exist on the service (metadata ingestd_job={job.id}),"
                    f" but listing media was refused: {exc.message}")
            self.queue.update(job.id, create_sent=0, error=(job.error or "") + note, event="lost_create_unresolved")
            bound.warning("lost_create_unresolved", error=exc.message)
            return self.queue.get(job.id)
        for media in found[1:]:
            self._delete_media(media.id, bound)
        if found:
            self.queue.update(job.id, media_id=found[0].id, event="media_recovered", detail={"media_id": found[0].id})
            bound.info("media_recovered", media_id=found[0].id)
        else:
            self.queue.update(job.id, create_sent=0)
        return self.queue.get(job.id)

    def _replaced_before_filing(self, job: q.Job, bound) -> None:
        """Replaced since it was uploaded: this outcome is the old file's; the new one is the watcher's to queue."""
        self.queue.update(job.id, final_path=None, event="file_replaced_before_filing")
        bound.warning("file_replaced_before_filing")
        self._finish(self.queue.get(job.id), bound)

    def _finish(self, job: q.Job, bound, *, final_path: str | None = None, report: dict[str, Any] | None = None) -> None:
        state = _FINAL_STATE.get(job.outcome, q.DONE)
        if report is None:
            report = self._error_report(job) if job.outcome in (q.FAILED, q.CANCELLED) else self._done_report(job)
        self.queue.finish(job.id, state, final_path=final_path, outcome=job.outcome, report=report)
        if job.outcome in (q.DONE, "duplicate") or state == q.DONE:
            self._supersede_failures(job, bound)

    def _supersede_failures(self, job: q.Job, bound) -> None:
        """A success clears the failures of earlier tries of the same file: they no longer need anyone's attention."""
        for old in self.queue.superseded_failures(job):
            report = filing.report_path(Path(old.final_path), failed=True) if old.final_path else None
            note = f"superseded by job {job.id} (media {job.media_id}), which published the file"
            self.queue.finish(old.id, q.SKIPPED, outcome="superseded", error=note)
            if report is None or not report.exists():
                continue
            try:
                if os.path.lexists(old.final_path):
                    # The failed copy is still there: its report now says why it can go.
                    filing.write_report(report, json.loads(report.read_text()) | {"status": "superseded", "reason": note})
                else:
                    report.unlink()
            except (OSError, ValueError, filing.FilingError) as exc:
                bound.warning("superseded_report_not_updated", report=str(report), error=str(exc))

    # -- outcomes ----------------------------------------------------------

    def _fail(self, job: q.Job, failed: JobFailed, bound) -> None:
        reason = failed.reason + (f" — {failed.hint}" if failed.hint else "")
        bound.warning("job_failing", reason=reason)
        self.queue.update(job.id, stage=q.FILE, outcome=q.FAILED, error=reason, event="failing", detail={"reason": reason})
        try:
            self._file(self.queue.get(job.id), "", bound)
        except filing.FilingError as exc:
            bound.error("filing_failed", error=str(exc))
            self.queue.release(job.id, delay=self._filing_retry(), error=str(exc), refund_attempt=True, event="filing_blocked")
        except TransientError as exc:
            # The media's DELETE did not get through: the job stays at filing and tries again.
            self._retry_later(self.queue.get(job.id), exc, bound)
        except AuthError as exc:
            self._hold_for_credentials(job, exc, bound)

    def cancel(self, job: q.Job) -> None:
        """Stop a claimed job for good: its media is deleted (unless kept) and the file goes to the failed folder."""
        bound = log.bind(job_id=job.id, path=job.path)
        self._held.owner = job.lease_owner or ""
        self.queue.update(job.id, stage=q.FILE, outcome=q.CANCELLED, error="cancelled by the operator", event="cancelling")
        try:
            self._file(self.queue.get(job.id), "", bound)
        except (APIError, filing.FilingError):
            # Recorded as cancelled already: the daemon finishes deleting and filing it.
            self.queue.release(job.id, delay=0)
            raise

    def _skip_duplicate(self, job: q.Job, earlier: q.Job, bound) -> None:
        bound.info("duplicate_skipped", earlier_job=earlier.id, earlier_media_id=earlier.media_id)
        self.queue.update(job.id, stage=q.FILE, outcome="duplicate", media_id=None, media=earlier.media,
                          error=f"same content as job {earlier.id} (media {earlier.media_id}); not uploaded again")
        self._file(self.queue.get(job.id), "", bound)

    def _auth_refused(self, job: q.Job, exc: AuthError, bound) -> None:
        try:
            forbidden_only = self._forbidden_only(exc)
        except TransientError as check_failed:
            self._retry_later(self.queue.get(job.id), check_failed, bound)
            return
        if forbidden_only:
            self._fail(self.queue.get(job.id), JobFailed(f"the API forbade {exc.method} {exc.path}: {exc.message}"), bound)
        else:
            self._hold_for_credentials(job, exc, bound)

    def _forbidden_only(self, exc: AuthError) -> bool:
        """A 403 that is not about the credentials (another account's media, a forbidden action): they still work."""
        return exc.status_code == 403 and self.client.credentials_work()

    def _hold_for_credentials(self, job: q.Job, exc: AuthError, bound) -> None:
        bound.error("credentials_rejected", status=exc.status_code, message=exc.message)
        self.queue.hold(job.id, f"auth: the API rejected the credentials ({exc.status_code}: {exc.message});"
                                " fix api.token or the key pair, then reload")

    def _retry_later(self, job: q.Job, exc: TransientError, bound) -> None:
        outage = self.breaker.failure()
        upload = self.config.upload
        # A job already failing only has its media's DELETE left: giving up on that would orphan the media.
        failing = job.stage == q.FILE
        if job.attempts >= upload.max_attempts and not outage and not failing:
            self._fail(job, JobFailed(f"gave up after {job.attempts} attempts; last error: {exc}"), bound)
            return
        # Full exponential backoff, capped, with jitter so jobs that failed together don't retry together.
        delay = min(upload.retry_delay_max, upload.retry_delay * 2 ** max(job.attempts - 1, 0)) * self.rng.uniform(0.5, 1.0)
        if exc.retry_after:
            # The server's own wait (429 retry-after) is a floor, not a replacement for the backoff.
            delay = max(delay, exc.retry_after)
        if outage:
            delay = max(delay, self.breaker.seconds_left())
        bound.warning("transient_error", error=str(exc), retry_in=round(delay, 2), api_outage=outage)
        # A failing job keeps the reason it fails for: that is what its report must say, not the DELETE's hiccup.
        self.queue.release(job.id, delay=delay, error=None if failing else str(exc), refund_attempt=outage)

    def _unexpected(self, job: q.Job, exc: Exception, bound) -> None:
        reason = f"unexpected error in the {job.stage} step: {type(exc).__name__}: {str(exc)[:300]}"
        bound.exception("job_unexpected_error", error=reason)
        upload = self.config.upload
        if job.attempts < upload.max_attempts:
            delay = min(upload.retry_delay_max, upload.retry_delay * 2 ** max(job.attempts - 1, 0))
            # A job already failing keeps the reason it fails for; the log has this one.
            self.queue.release(job.id, delay=delay, error=None if job.outcome in (q.FAILED, q.CANCELLED) else reason)
            return
        failure = JobFailed(f"gave up after {job.attempts} attempts; last error: {reason}")
        if job.stage == q.FILE:
            # Failing goes through filing too: when that is what breaks, record the outcome without moving.
            self.queue.finish(job.id, q.FAILED, error=failure.reason, outcome=q.FAILED)
            bound.error("job_failed_unfiled", reason=failure.reason)
            return
        try:
            self._fail(job, failure, bound)
        except Exception:
            bound.exception("job_failed_unfiled", reason=failure.reason)
            self.queue.finish(job.id, q.FAILED, error=failure.reason, outcome=q.FAILED)

    def _delete_media(self, media_id: str, bound) -> None:
        """Delete a media of ours; gone already is fine, any other failure is the caller's to retry."""
        try:
            self.client.delete_media(media_id)
        except NotFoundError:
            return
        except RejectedError as exc:
            # Refused for a reason a retry would not change: say so, and leave the media to the operator.
            bound.error("media_delete_refused", media_id=media_id, error=str(exc))
            return
        except AuthError as exc:
            if not self._forbidden_only(exc):
                raise
            bound.error("media_delete_refused", media_id=media_id, error=str(exc))
            return
        except APIError as exc:
            bound.warning("media_delete_failed", media_id=media_id, error=str(exc))
            raise
        bound.info("media_deleted", media_id=media_id)

    def _ensure_unchanged(self, job: q.Job, bound) -> None:
        """A file written to after its upload began must not be published half old: start over on a fresh media."""
        try:
            st = os.stat(job.path, follow_symlinks=False)
        except FileNotFoundError:
            raise JobFailed("the file disappeared during its upload") from None
        if _stat_key(st) == _job_key(job):
            return
        bound.warning("file_changed_during_upload")
        if job.media_id:
            self._delete_media(job.media_id, bound)
        self.queue.forget_parts(job.id)
        self.queue.update(job.id, **_stat_fields(st), media_id=None, create_sent=0,
                          stage=q.PREPARE, event="restarted_file_changed")
        raise _Reschedule(self._settle(job), "waiting_for_file_to_settle")

    # -- helpers -----------------------------------------------------------

    def _filing_retry(self) -> float:
        # A full or read-only disk is fixed by a person: check again now and then, never give up on the file.
        return min(FILING_RETRY, self.config.upload.retry_delay_max)

    def _folder(self, job: q.Job) -> FolderConfig | None:
        return next((f for f in self.config.folders if str(f.path) == job.root), self.former_folders.get(job.root))

    def _settle(self, job: q.Job) -> float:
        folder = self._folder(job)
        return folder.settle if folder else 5.0

    def _dest_dir(self, job: q.Job, folder: FolderConfig | None, failed: bool) -> Path:
        if folder is None:
            # The folder left the config before this daemon started: file beside the state dir rather than lose it.
            return Path(self.config.state_dir) / ("failed" if failed else "done")
        return folder.failed_dir if failed else folder.done_dir

    def _done_report(self, job: q.Job) -> dict[str, Any]:
        media = job.media_body or {}
        report = {
            "job_id": job.id,
            "source": job.path,
            "rule": job.rule,
            "finished_at": _now_iso(),
            "size": job.size,
        }
        if job.outcome == "duplicate":
            report.update(status="duplicate", reason=job.error, media_id=media.get("id"),
                          title=media.get("title"), assets=media.get("assets") or {})
            return report
        report.update(
            status=media.get("status", job.media_status),
            media_id=job.media_id,
            title=media.get("title"),
            duration=media.get("duration"),
            is_public=media.get("is_public") if not job.publish_when_done else True,
            assets=media.get("assets") or {},
        )
        return report

    def _error_report(self, job: q.Job) -> dict[str, Any]:
        media_kept = bool(job.media_id) and self.config.keep_failed_media
        return {
            "job_id": job.id,
            "source": job.path,
            "rule": job.rule,
            "failed_at": _now_iso(),
            "reason": job.error,
            "attempts": job.attempts,
            "media_id": job.media_id if media_kept else None,
            "media_deleted": bool(job.media_id) and not media_kept,
            "retry": f"fix the cause, then run: ingestd jobs retry {job.id[:12]}",
        }


class _LeaseKeeper:
    """Renews a job's lease while it runs, so a part that takes longer than the lease is never taken over."""

    def __init__(self, queue: q.JobQueue, job_id: str, owner: str, *, on_lost: Callable[[str], None]):
        self.queue, self.job_id, self.owner = queue, job_id, owner
        self.on_lost = on_lost
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{job_id[:8]}", daemon=True)

    def _keep(self) -> None:
        while not self._done.wait(self.queue.lease_seconds / 3):
            if not self.queue.renew(self.job_id, self.owner):
                self.on_lost(self.job_id)
                return

    def __enter__(self) -> "_LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


_FINAL_STATE = {q.FAILED: q.FAILED, q.CANCELLED: q.CANCELLED, "duplicate": q.SKIPPED}


class _Stop(Exception):
    """The stage already recorded a final outcome."""


def _layout(plan: list[tuple[int, int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((start, length) for _, start, length in plan)


def _layout_of(size: int, acked: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """(chunk size, index base) implied by acknowledged parts: any part but the last is one chunk long."""
    for index, start, length in acked:
        if start + length < size and start % length == 0:
            return length, index - start // length
    return None

class _Cancel(Exception):
    """The operator cancelled this job while it ran: it stops at the next part or step."""


def _same_content(other: q.Job, key: str, layout: tuple[tuple[int, int], ...], md5s: list[str]) -> bool:
    if other.content_key:
        return other.content_key == key
    try:
        return _part_md5s(Path(other.path), layout) == md5s
    except OSError:
        return False


def _is_jobs_file(path: Path, job: q.Job) -> bool:
    """Whether ``path`` still holds the file the job was about (not a newer one moved over it)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return _stat_key(st) == _job_key(job)


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return filing.file_key(st)


def _job_key(job: q.Job) -> tuple[int, int, int]:
    return job.size, job.mtime_ns, job.inode


def _stat_fields(st: os.stat_result) -> dict[str, int]:
    size, mtime_ns, inode = _stat_key(st)
    return {"size": size, "mtime_ns": mtime_ns, "inode": inode}


def _content_key(layout: tuple[tuple[int, int], ...], md5s: list[str]) -> str:
    """What identifies a file's content: its part layout and each part's MD5."""
    digest = hashlib.sha256()
    for (start, length), md5 in zip(layout, md5s, strict=True):
        digest.update(f"{start}:{length}:{md5};".encode())
    return digest.hexdigest()


def _part_md5s(path: Path, layout: tuple[tuple[int, int], ...]) -> list[str]:
    digests = []
    with open(path, "rb") as src:
        for start, length in layout:
            src.seek(start)
            digest = hashlib.md5()
            left = length
            while left and (chunk := src.read(min(left, 1024 * 1024))):
                digest.update(chunk)
                left -= len(chunk)
            digests.append(digest.hexdigest())
    return digests


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
