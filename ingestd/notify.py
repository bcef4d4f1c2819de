"""Notifications: telling webhooks, commands and chats that a job ended or is held, at least once.

The queue writes each notification to its outbox in the same transaction as the
job's end (or hold), after the file reached its final folder. Here one sender
thread per target takes them from the outbox in order per job, sends them, and
records the outcome; a failed try is repeated with capped exponential backoff
and jitter for at least a day, then marked undeliverable for a person to see
(``ingestd notify list``) and retry (``ingestd notify retry``). A slow or dead
receiver only holds up its own thread; uploads never wait for a notification,
and a notification that cannot be sent never fails its job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import re
import select
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import httpx
import structlog

from . import __version__, crashpoints
from . import queue as q
from .client import deadline, read_at_most, with_deadlines
from .config import AppriseNotify, CommandNotify, Config, WebhookNotify
from .templates import as_text, render_template

log = structlog.get_logger("ingestd.notify")

WEBHOOK_TIMEOUT = 10.0
MAX_REDIRECTS = 5
# Characters of a refusing receiver's answer kept for the log and the status page.
ANSWER_SHOWN = 200
# Backoff between tries of one notification: the first retry within seconds, doubling up to ten minutes.
FIRST_RETRY = 5.0
MAX_RETRY_WAIT = 600.0
GIVE_UP_AFTER = 24 * 3600.0
# What a command may print that goes to the log, per stream.
OUTPUT_LIMIT = 2000
# How long, once a command has exited, its output may take to end (a child it left running may hold it open).
OUTPUT_GRACE = 5.0
# A command's environment: nothing of the daemon's (its token) leaks in, only these and INGESTD_*.
COMMAND_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Outcome:
    """How one try went: ``accepted`` when the target took it; ``detail`` says what it answered, in words."""

    accepted: bool
    detail: str


class Target(ABC):
    """One place notifications go."""

    kind: str

    def __init__(self, events: list[str], destination: str, label: str):
        self.events = frozenset(events)
        # Stable across restarts and reloads while the destination stays the same: the outbox rows refer to it.
        self.key = f"{self.kind}:{hashlib.sha256(destination.encode()).hexdigest()[:16]}"
        self.label = label

    @property
    def outbox(self) -> q.OutboxTarget:
        return q.OutboxTarget(self.key, self.label, self.events)

    @property
    def lease(self) -> float:
        """How long one try may take at most, so no other sender picks the same notification meanwhile."""
        return WEBHOOK_TIMEOUT + 60.0

    @abstractmethod
    def send(self, payload: str, event_id: str) -> Outcome:
        """Deliver one notification; ``payload`` is its JSON body, exactly as stored."""

    def close(self) -> None:
        pass


class WebhookTarget(Target):
    """POST the report as JSON, signed when there is a secret; 2xx is delivered."""

    kind = "webhook"

    def __init__(self, spec: WebhookNotify, *, timeout: float = WEBHOOK_TIMEOUT):
        parts = urlsplit(spec.webhook)
        # No user info or query string in what people (and logs) see: either may carry a token.
        super().__init__(spec.events, spec.webhook, f"webhook {parts.scheme}://{parts.hostname}"
                         f"{':' + str(parts.port) if parts.port else ''}{parts.path}")
        self.url = spec.webhook
        self.secret = spec.secret.get_secret_value().encode() if spec.secret else None
        # Redirects are followed by hand, to the same host only; TLS is always verified. The timeout bounds each
        # read and, through the deadline transport, the whole exchange: a receiver trickling bytes cannot hold on.
        self.timeout = timeout
        self.http = httpx.Client(transport=with_deadlines(httpx.HTTPTransport(verify=True)), timeout=timeout,
                                 follow_redirects=False)

    def headers(self, body: bytes, event: str, event_id: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": f"ingestd/{__version__}",
                   "X-Ingestd-Event": event, "Idempotency-Key": event_id}
        if self.secret is not None:
            headers["X-Ingestd-Signature"] = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return headers

    def send(self, payload: str, event_id: str) -> Outcome:
        body = payload.encode()
        headers = self.headers(body, event_id.rpartition(":")[2], event_id)
        url = self.url
        try:
            with deadline(self.timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    # Only the answer's first bytes are read (a receiver's page can go on and on; the log shows 200).
                    with self.http.stream("POST", url, content=body, headers=headers) as response:
                        start = read_at_most(response, ANSWER_SHOWN)
                    if not response.is_redirect:
                        break
                    location = urljoin(url, response.headers["Location"])
                    if not _same_host(url, location):
                        return Outcome(False, f"HTTP {response.status_code} redirect to another host refused: "
                                              f"{_origin(location)}")
                    url = location
                else:
                    return Outcome(False, f"more than {MAX_REDIRECTS} redirects")
        except httpx.TimeoutException:
            return Outcome(False, f"no answer within {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}")
        if response.is_success:
            return Outcome(True, f"HTTP {response.status_code}")
        text = start.decode(response.encoding or "utf-8", "replace").strip()
        return Outcome(False, f"HTTP {response.status_code}: {text[:ANSWER_SHOWN]}{'…' if len(text) > ANSWER_SHOWN else ''}")

    def close(self) -> None:
        self.http.close()


class CommandTarget(Target):
    """Run a program (no shell) with the report on stdin and its fields as placeholders; exit 0 is delivered."""

    kind = "command"

    def __init__(self, spec: CommandNotify):
        super().__init__(spec.events, json.dumps(spec.command), f"command {spec.command[0]}")
        self.argv = spec.command
        self.timeout = spec.timeout

    @property
    def lease(self) -> float:
        return self.timeout + 60.0

    def send(self, payload: str, event_id: str) -> Outcome:
        report = json.loads(payload)
        variables = _flatten(report)
        try:
            argv = [render_template(item, variables) for item in self.argv]
        except ValueError as exc:
            return Outcome(False, f"cannot fill in the command: {exc}")
        env = {"PATH": COMMAND_PATH, "LANG": "C.UTF-8", "INGESTD_EVENT_ID": event_id}
        env |= {"INGESTD_" + name.replace(".", "_").upper(): value for name, value in variables.items()}
        env = {k: v.replace("\0", "") for k, v in env.items()}
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       env=env, cwd="/", start_new_session=True)
        except OSError as exc:
            return Outcome(False, f"cannot run {argv[0]}: {exc.strerror or exc}")
        out, err = _Heads("stdout", process.stdout), _Heads("stderr", process.stderr)
        feeder = threading.Thread(target=_feed, args=(process.stdin, payload.encode()), daemon=True)
        for thread in (feeder, out, err):
            thread.start()
        try:
            process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # Its own process group: whatever it started goes too.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return Outcome(False, f"still running after {self.timeout:g}s, killed{_output(out, err)}")
        if process.returncode == 0:
            return Outcome(True, f"exit 0{_output(out, err)}")
        how = f"killed by signal {-process.returncode}" if process.returncode < 0 else f"exit {process.returncode}"
        return Outcome(False, how + _output(out, err))


def _feed(pipe: IO[bytes], data: bytes) -> None:
    """Write a command's stdin and close it; a command that does not read it is its own business."""
    try:
        with pipe:
            pipe.write(data)
    except OSError:  # BrokenPipeError: it exited, or closed its stdin
        pass


class _Heads(threading.Thread):
    """Read a command's stdout or stderr to its end, keeping its first bytes: its output is read so that it never
    blocks on a full pipe, and kept only as far as the log shows it, however much it writes."""

    def __init__(self, name: str, pipe: IO[bytes]):
        super().__init__(daemon=True)
        self.name = name
        self.pipe = pipe
        self.head = bytearray()
        self.size = 0
        self._give_up = threading.Event()

    def run(self) -> None:
        fd = self.pipe.fileno()
        with self.pipe:
            # A child the command left in the background can hold the pipe open for ever: wait in short steps.
            while not self._give_up.is_set():
                if not select.select([fd], [], [], 0.5)[0]:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                if len(self.head) < OUTPUT_LIMIT:
                    self.head += chunk[:OUTPUT_LIMIT - len(self.head)]
                self.size += len(chunk)

    def said(self, by: float) -> str:
        """``name: first bytes… (n more bytes)``, or nothing when the stream was empty; what came by ``by``
        (``time.monotonic()``) when the stream has not ended by then."""
        self.join(max(0.0, by - time.monotonic()))
        if self.is_alive():
            self._give_up.set()
            self.join()
        text = bytes(self.head).decode(errors="replace").strip()
        more = self.size - len(self.head)
        return f"{self.name}: {text}" + (f"… ({more} more bytes)" if more else "") if text else ""


class AppriseTarget(Target):
    """A chat or mail service through an Apprise URL: one line a person reads."""

    kind = "apprise"

    def __init__(self, spec: AppriseNotify):
        import apprise

        url = spec.apprise.get_secret_value()
        with _quiet_apprise():
            plugin = apprise.Apprise.instantiate(url)
        # Apprise's own privacy form hides the tokens its URLs carry.
        shown = plugin.url(privacy=True).split("?", 1)[0].rstrip("/") if plugin is not None else urlsplit(url).scheme + "://"
        super().__init__(spec.events, url, f"apprise {shown}")
        self.url = url
        self.apprise = apprise.Apprise()
        self.apprise.add(plugin if plugin is not None else url)

    def send(self, payload: str, event_id: str) -> Outcome:
        import apprise

        report = json.loads(payload)
        failure = report.get("event") in ("failed", "held")
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
            accepted = self.apprise.notify(title=f"ingestd: {report.get('event')}", body=message(report),
                                           notify_type=apprise.NotifyType.FAILURE if failure else apprise.NotifyType.INFO)
        if accepted:
            return Outcome(True, "accepted")
        said = " ".join(line.strip() for line in captured.getvalue().splitlines() if line.strip())
        return Outcome(False, _clip(said, 300) or "the service did not accept it")


def message(report: dict[str, Any]) -> str:
    """One line for people, per event."""
    event = report.get("event")
    name = Path(str(report.get("source") or "")).name or report.get("job_id", "")
    if event == "done":
        link = (report.get("assets") or {}).get("hls_url") or f"media {report.get('media_id')}"
        return f"Published: {report.get('title') or name} — {link}"
    if event == "failed":
        return f"Failed: {name} — {report.get('reason')}"
    if event == "duplicate":
        return f"Not uploaded again: {name} — {report.get('reason')}"
    if event == "held":
        return f"Held: {name} — {report.get('reason')}"
    return f"ingestd {event}: {report.get('title') or name}"


def targets_of(config: Config) -> list[Target]:
    kinds: dict[type, Callable[[Any], Target]] = {
        WebhookNotify: WebhookTarget, CommandNotify: CommandTarget, AppriseNotify: AppriseTarget}
    return [kinds[type(spec)](spec) for spec in config.notify]


def outbox_targets(config: Config) -> tuple[q.OutboxTarget, ...]:
    """The config's targets as the queue knows them (for a process that records notifications, not sends them)."""
    targets = targets_of(config)
    for target in targets:
        target.close()
    return tuple(target.outbox for target in targets)


def secrets_of(config: Config) -> list[str]:
    """What the log redactor must hide: webhook secrets, and the tokens and passwords inside Apprise URLs."""
    found = [spec.secret.get_secret_value() for spec in config.notify if isinstance(spec, WebhookNotify) and spec.secret]
    for spec in config.notify:
        if isinstance(spec, AppriseNotify):
            found += _apprise_secrets(spec.apprise.get_secret_value())
    return found


def _apprise_secrets(url: str) -> list[str]:
    """The parts of an Apprise URL that Apprise itself masks when it shows the URL."""
    import apprise

    with _quiet_apprise():
        plugin = apprise.Apprise.instantiate(url)
    shown = plugin.url(privacy=True) if plugin is not None else ""
    return [part for part in re.split(r"[/:@?&=#]", url) if part and part not in shown]


def apprise_understands(url: str) -> bool:
    import apprise

    with _quiet_apprise():
        return apprise.Apprise.instantiate(url) is not None


def retry_delay(attempts: int, rng: random.Random) -> float:
    """The wait after the ``attempts``-th failed try: 5 s, 10 s, 20 s … up to 10 min, less up to a fifth (jitter)."""
    return min(MAX_RETRY_WAIT, FIRST_RETRY * 2 ** max(attempts - 1, 0)) * rng.uniform(0.8, 1.0)


def sample_event() -> dict[str, Any]:
    """What ``ingestd notify test`` sends: shaped like a done report, marked as a test."""
    job_id = "test-" + os.urandom(6).hex()
    return {"event": "test", "job_id": job_id, "status": "test", "title": "ingestd test notification",
            "source": "/test/ingestd-test.mp3", "media_id": None, "assets": {}}


class Sender:
    """Delivers one target's notifications from the outbox, one at a time, until stopped."""

    def __init__(self, queue: q.JobQueue, target: Target, *, node: str | None = None,
                 on_outcome: Callable[[Target, Outcome], None] | None = None, rng: random.Random | None = None,
                 give_up_after: float = GIVE_UP_AFTER, poll: float = 2.0):
        self.queue = queue
        self.target = target
        self.node = node
        self.on_outcome = on_outcome
        self.rng = rng or random.Random()
        self.give_up_after = give_up_after
        self.poll = poll
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"notify-{target.kind}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        seen = -1
        try:
            while not self.stopping.is_set():
                try:
                    self.deliver_due()
                except Exception:
                    # The outbox keeps every notification: a bug here delays them, it loses none.
                    log.exception("notify_sender_error", target=self.target.label)
                seen = self.queue.wait_for_outbox(seen, self.poll)
        finally:
            self.target.close()

    def deliver_due(self, now: float | None = None) -> int:
        """Try every notification due now, oldest first; returns how many were tried."""
        tried = 0
        while not self.stopping.is_set():
            due = self.queue.due_notifications(self.target.key, now=now, limit=1)
            if not due or not self.queue.claim_notification(due[0], lease=self.target.lease, node=self.node, now=now):
                return tried
            self.deliver(due[0], now=now)
            tried += 1
        return tried

    def deliver(self, n: q.Notification, *, now: float | None = None) -> Outcome:
        bound = log.bind(target=self.target.label, job_id=n.job_id, notify_event=n.event, attempt=n.attempts + 1)
        try:
            outcome = self.target.send(n.payload, n.event_id)
        except Exception as exc:
            # A failing target never fails the job, nor the sender.
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        if self.on_outcome is not None:
            self.on_outcome(self.target, outcome)
        now = self.queue.now() if now is None else now
        if outcome.accepted:
            crashpoints.reach("after_notification_accepted")
            self.queue.notification_sent(n, now=now)
            bound.info("notification_sent", detail=outcome.detail)
            return outcome
        first = n.first_tried_at or now
        if now - first >= self.give_up_after:
            self.queue.notification_failed(n, outcome.detail, retry_at=None)
            bound.error("notification_undeliverable", detail=outcome.detail, trying_since=_iso(first),
                        hint="see `ingestd notify list`; `ingestd notify retry` tries again")
            return outcome
        delay = retry_delay(n.attempts + 1, self.rng)
        self.queue.notification_failed(n, outcome.detail, retry_at=now + delay)
        bound.warning("notification_failed", detail=outcome.detail, retry_in=round(delay, 1))
        return outcome


class Notifier:
    """The daemon's notification senders: one per configured target, replaced on reload."""

    def __init__(self, queue: q.JobQueue, *, node: str | None = None,
                 on_outcome: Callable[[Target, Outcome], None] | None = None):
        self.queue = queue
        self.node = node
        self.on_outcome = on_outcome
        self.senders: list[Sender] = []

    def start(self, config: Config) -> None:
        targets = targets_of(config)
        self.queue.outbox_targets = tuple(t.outbox for t in targets)
        # On a shared queue another node may have targets this one does not: those stay theirs to send.
        gone = 0 if self.queue.shared else self.queue.orphan_notifications({t.key for t in targets})
        if gone:
            log.warning("notifications_for_removed_targets", count=gone,
                        hint="their targets left the config; `ingestd notify list` shows them")
        self.senders = [Sender(self.queue, target, node=self.node, on_outcome=self.on_outcome) for target in targets]
        for sender in self.senders:
            sender.start()

    def reload(self, config: Config) -> None:
        """New senders for the new targets; a send in flight finishes on its own (its lease keeps it single)."""
        self.stop(timeout=0)
        self.start(config)

    def stop(self, timeout: float = 5.0) -> None:
        for sender in self.senders:
            sender.stop()
        self.queue.wake_senders()
        deadline = time.monotonic() + timeout
        for sender in self.senders:
            sender.thread.join(max(0.0, deadline - time.monotonic()))


def deliver_now(queue: q.JobQueue, config: Config, job_id: str) -> None:
    """One try for each of a job's pending notifications (``ingestd upload``); what fails waits for the daemon."""
    for target in targets_of(config):
        sender = Sender(queue, target)
        for n in queue.notifications(states=(q.PENDING,), job_id=job_id):
            if n.target != target.key or not queue.claim_notification(n, lease=target.lease):
                continue
            if not sender.deliver(n).accepted:
                break  # the job's later events wait behind this one
        target.close()


def try_every_target(config: Config) -> Iterator[tuple[Target, Outcome]]:
    """Send one sample event to every target, as ``ingestd notify test`` does; yields each outcome."""
    payload = json.dumps(sample_event(), ensure_ascii=False, sort_keys=True)
    event_id = json.loads(payload)["job_id"] + ":test"
    for target in targets_of(config):
        try:
            outcome = target.send(payload, event_id)
        except Exception as exc:
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        finally:
            target.close()
        yield target, outcome


# -- helpers -------------------------------------------------------------------------------------


def _flatten(report: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The report's fields as placeholder values: nested ones by dotted name, missing or null ones empty."""
    from .config import REPORT_FIELDS

    values = dict.fromkeys(REPORT_FIELDS, "")
    for key, value in report.items():
        if isinstance(value, dict):
            values |= {f"{key}.{k}": as_text(v) for k, v in value.items() if v is not None and not isinstance(v, (dict, list))}
        elif value is not None and not isinstance(value, list):
            values[key] = as_text(value).lower() if isinstance(value, bool) else as_text(value)
    return values


def _same_host(url: str, location: str) -> bool:
    a, b = urlsplit(url), urlsplit(location)
    # The same host, and never from https down to http.
    return a.hostname == b.hostname and (a.scheme == b.scheme or (a.scheme, b.scheme) == ("http", "https"))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _output(*streams: _Heads) -> str:
    """What the command wrote; its streams are given OUTPUT_GRACE together to end once it has exited."""
    by = time.monotonic() + OUTPUT_GRACE
    said = [text for text in (stream.said(by) for stream in streams) if text]
    return ("; " + "; ".join(said)) if said else ""


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


_apprise_lock = threading.Lock()


@contextmanager
def _quiet_apprise() -> Iterator[None]:
    # Apprise logs a URL it cannot parse in full, token and all.
    with _apprise_lock:
        logger = logging.getLogger("apprise")
        was = logger.disabled
        logger.disabled = True
        try:
            yield
        finally:
            logger.disabled = was
