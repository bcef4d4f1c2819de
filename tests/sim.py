"""A model-based simulation of a watched folder's life, against the real daemon and the real emulator.

A seeded generator picks events — people dropping, replacing, renaming, deleting, truncating and appending
files; an operator retrying and cancelling jobs, reloading and killing the daemon; the API failing, rate
limiting, dropping answers and failing transcodes; media deleted from the dashboard — and at quiescent points
checks the invariants ingestd promises (README "What it promises", docs/architecture.md "Invariants"):

- I1 accounted for: every content that ever settled in the inbox is published and in done_dir with a report
  naming its media, or in failed_dir with a reason, or still in the inbox with a live job or a hold reason.
- I2 never destroyed: ingestd never overwrites or deletes a file except by a move that leaves the same bytes.
- I3 once: at most one done media per content, and no media that no job knows.
- I4 never stuck: no job runs without a live lease owner; every job ends or says why it waits.
- I5 true reports: every report's media exists on the server, is done, and holds exactly the file's bytes.
- I6 told: every event of every job that ended or was held (done, failed, duplicate, held) reached the
  notification target at least once, with its job's id and event in INGESTD_EVENT_ID.

The model only records what the simulated people did; everything else is read from disk, the queue and the
emulator. ``World`` sets the daemon up, ``Model`` remembers, ``check_invariants`` judges: extend the events in
``Simulation`` and the checks in ``check_invariants``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingestd import filing
from ingestd import queue as q
from ingestd.cli import main as ingestd_cli
from ingestd.client import StreamClient
from ingestd.emulator import Emulator, Faults
from ingestd.errors import APIError, NotFoundError

from .audio import write_wav, write_wav_of_size
from .conftest import fast_settings
from .daemon import Daemon, clock_off_by, make_config, wait_for

AUDIO_SUFFIX = ".wav"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class InvariantViolation(AssertionError):
    """An invariant does not hold; the message names it (I1…I6) and what broke it."""


# -- the world: folders, emulator, daemon ---------------------------------------------------------


class World:
    """One watched folder ``inbox`` → ``done`` / ``failed``, a running emulator and the daemon under test.

    With ``queue_url``, ``hosts`` daemons (each its own node_name and state folder) share that PostgreSQL queue
    and the one folder, as several hosts on one share would; ``clock_offsets`` puts host n's wall clock that many
    seconds off.
    """

    def __init__(self, root: Path, *, seed: int, config: dict | None = None, hosts: int = 1,
                 queue_url: str | None = None, clock_offsets: Sequence[float] = ()):
        self.root = root
        self.queue_url = queue_url
        self.emulator = Emulator(fast_settings(faults=Faults(seed=seed)), data_dir=root / "emulator").start()
        upload = {"workers": 2, "max_attempts": 6, "retry_delay": 0.05, "retry_delay_max": 0.4, "outage_pause": 0.3,
                  "poll_interval": 0.1}
        # A real program as the notification target, recording every event it is told (I6).
        self.told_path = root / "told.log"
        recorder = root / "tell.py"
        recorder.write_text("import os, sys\nwith open(sys.argv[1], 'a') as out:\n"
                            "    out.write(os.environ['INGESTD_EVENT_ID'] + '\\n')\n")
        notify = [{"command": [sys.executable, str(recorder), str(self.told_path)],
                   "events": ["done", "failed", "duplicate", "held"]}]
        self.inbox, self.done, self.failed = root / "inbox", root / "done", root / "failed"
        folder = {"settle": 0.2, "max_wait": 3, "sidecar": "off"}
        shared = {}
        if queue_url:
            for path in (self.inbox, self.done, self.failed):
                path.mkdir(parents=True, exist_ok=True)
            # A short lease, so a killed daemon's jobs are taken over by the others within a check.
            folder |= {"path": str(self.inbox), "done_dir": str(self.done), "failed_dir": str(self.failed)}
            shared = {"queue_url": queue_url, "queue_lease": 3}
        self.configs = [make_config(root / f"host{n}" if queue_url else root, self.emulator.base_url, upload=upload,
                                    folder=folder, **({"notify": notify} | shared | ({"node_name": f"host{n}"} if queue_url else {})
                                                      | (config or {})))
                        for n in range(hosts)]
        self.config = self.configs[0]
        self.envs = [clock_off_by(offset, root / f"clock-{n}") if offset else {}
                     for n, offset in enumerate(list(clock_offsets) + [0.0] * (hosts - len(clock_offsets)))]
        self.daemons = [Daemon(c, env=e) for c, e in zip(self.configs, self.envs)]

    @property
    def daemon(self) -> Daemon:
        return self.daemons[0]

    def start(self, which: int | None = None) -> None:
        for n in range(len(self.daemons)) if which is None else [which]:
            daemon = self.daemons[n] = Daemon(self.configs[n], env=self.envs[n])
            before = len(daemon.log()) if daemon.log_path.exists() else 0
            daemon.start()
            wait_for(lambda: '"ready"' in daemon.log()[before:] or daemon.proc.poll() is not None, timeout=60,
                     what="the daemon ready")
            assert daemon.proc.poll() is None, "the daemon exited at start:\n" + daemon.log()[-3000:]

    def kill(self, which: int = 0) -> None:
        self.daemons[which].kill()

    def stop(self) -> None:
        for daemon in self.daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop(60)
        self.emulator.stop()

    def cli(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = ingestd_cli([*argv, "--config", str(self.config)])
        return code, out.getvalue()

    def queue(self) -> q.JobQueue:
        return q.JobQueue(self.queue_url or q.queue_path(self.root / "state"), max_connections=2)

    def jobs(self) -> list[q.Job]:
        queue = self.queue()
        try:
            return queue.list(limit=1_000_000)
        finally:
            queue.close()

    def told(self) -> set[str]:
        """The event ids the notification target has heard, repeats folded."""
        return set(self.told_path.read_text().split()) if self.told_path.exists() else set()

    def notifications_pending(self) -> int:
        queue = self.queue()
        try:
            return len(queue.notifications(states=(q.PENDING,)))
        finally:
            queue.close()

    def client(self) -> StreamClient:
        return StreamClient(self.emulator.base_url, token="test-token")

    def faults(self, **shares: float) -> None:
        faults = self.emulator.settings.faults
        for name in ("server_error", "rate_limited", "drop_after_commit", "transcode_fail"):
            setattr(faults, name, shares.get(name, 0.0))


# -- the model: what people did ---------------------------------------------------------------------


@dataclass
class Model:
    """Contents by digest, and which of them people destroyed (so ingestd need not keep them)."""

    contents: dict[str, bytes] = field(default_factory=dict)
    settled: set[str] = field(default_factory=set)  # contents that sat unchanged in the inbox long enough
    destroyed: set[str] = field(default_factory=set)  # overwritten, deleted or edited in place by a person
    tainted_inodes: set[int] = field(default_factory=set)  # files a person edited in place
    deleted_media: set[str] = field(default_factory=set)  # media deleted on the server by a person
    strangers: dict[Path, bytes] = field(default_factory=dict)  # files people put in done/failed: never touched
    names: list[str] = field(default_factory=list)

    def note(self, data: bytes) -> str:
        key = digest(data)
        self.contents[key] = data
        self.destroyed.discard(key)
        return key


# -- invariants ---------------------------------------------------------------------------------------


def _audio_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith((filing.DONE_SUFFIX, filing.ERROR_SUFFIX))
            and not p.name.startswith(".")]


def check_invariants(world: World, model: Model) -> Counter:
    """Check I1–I6 at a quiescent point; return how many checks of each passed, raise InvariantViolation otherwise."""
    passed: Counter = Counter()
    jobs = world.jobs()
    live = {j.path: j for j in jobs if j.state in q.LIVE_STATES}
    media = {m["id"]: m for m in world.emulator.all_media(include_deleted=True)}

    def media_bytes(media_id: str) -> bytes | None:
        path = world.emulator.media_file(media_id)
        return path.read_bytes() if path and path.exists() else None

    # I4: nothing runs at a quiescent point; every live job says why it waits.
    for job in jobs:
        if job.state == q.RUNNING:
            raise InvariantViolation(f"I4: job {job.id} ({job.relpath}) is running with no work going on "
                                     f"(lease owner {job.lease_owner}, stage {job.stage})")
        if job.state == q.HELD and not job.held_reason:
            raise InvariantViolation(f"I4: job {job.id} ({job.relpath}) is held without a reason")
        if job.state == q.QUEUED and not job.error:
            raise InvariantViolation(f"I4: job {job.id} ({job.relpath}) is queued at a quiescent point with no reason")
        passed["I4"] += 1

    # I5: every done report names a media that exists, is done, and holds the file's bytes.
    where: dict[str, list[str]] = {}
    for path in _audio_files(world.done):
        data = path.read_bytes()
        where.setdefault(digest(data), []).append(f"done:{path.relative_to(world.done)}")
        if path in model.strangers:
            continue
        report_file = filing.report_path(path, failed=False)
        if not report_file.exists():
            raise InvariantViolation(f"I5: {path} is in done_dir without a report")
        report = json.loads(report_file.read_text())
        media_id = report.get("media_id")
        if os.stat(path).st_ino in model.tainted_inodes or media_id in model.deleted_media:
            continue  # a person changed the file or deleted its media after it was published
        if media_id not in media or media[media_id]["status"] != "done":
            raise InvariantViolation(f"I5: the report of {path} names media {media_id}, which is "
                                     f"{media.get(media_id, {}).get('status', 'not on the server')}")
        if media_bytes(media_id) != data:
            raise InvariantViolation(f"I5: media {media_id} does not hold the bytes of {path}")
        passed["I5"] += 1
    for path in _audio_files(world.failed):
        data = path.read_bytes()
        if path in model.strangers:
            continue
        report_file = filing.report_path(path, failed=True)
        reason = json.loads(report_file.read_text()).get("reason") if report_file.exists() else None
        if reason:
            where.setdefault(digest(data), []).append(f"failed:{path.relative_to(world.failed)}")
    for path in _audio_files(world.inbox):
        job = live.get(str(path))
        if job is not None and (job.held_reason or job.error):
            where.setdefault(digest(path.read_bytes()), []).append(f"inbox:{path.relative_to(world.inbox)}")

    # I1 and I2: every settled content nobody destroyed is accounted for somewhere.
    for key in sorted(model.settled - model.destroyed):
        if not where.get(key):
            raise InvariantViolation(f"I1/I2: content {key} ({len(model.contents[key])} bytes) is neither published in "
                                     f"done_dir, nor failed with a reason, nor waiting in the inbox with a job")
        passed["I1"] += 1
    for path, data in model.strangers.items():
        if not path.exists() or path.read_bytes() != data:
            raise InvariantViolation(f"I2: {path}, a file ingestd did not put there, was replaced or removed")
        passed["I2"] += 1

    # I3: one done media per content; no media that no job knows.
    by_content: dict[str, list[str]] = {}
    known = {j.media_id for j in jobs if j.media_id}
    for media_id, item in media.items():
        if item["status"] == "deleted":
            continue
        data = media_bytes(media_id)
        if item["status"] == "done" and data is not None:
            by_content.setdefault(digest(data), []).append(media_id)
        if media_id not in known:
            raise InvariantViolation(f"I3: media {media_id} ({item['status']}) is known to no job (an orphan)")
        passed["I3"] += 1
    for key, ids in by_content.items():
        if len(ids) > 1:
            raise InvariantViolation(f"I3: content {key} is published {len(ids)} times: {ids}")

    # I6: every job's events were told at least once (a cancelled or ignored job raises none).
    told = world.told()
    queue = world.queue()
    try:
        for job in jobs:
            owed = {q.DONE: ["done"], q.FAILED: ["failed"]}.get(job.state, ["duplicate"] if job.outcome == "duplicate" else [])
            if any(e["event"] == "held" for e in queue.events(job.id)):
                owed.append("held")
            for event in owed:
                if f"{job.id}:{event}" not in told:
                    raise InvariantViolation(f"I6: job {job.id} ({job.relpath}, {job.state}) raised {event!r}, which "
                                             f"its notification target never heard")
                passed["I6"] += 1
    finally:
        queue.close()
    return passed


def wait_quiescent(world: World, timeout: float = 90.0) -> None:
    """Until no job runs or waits to run and every audio file in the inbox has an outcome or a reason to wait (I4)."""
    def quiet() -> bool:
        if world.notifications_pending():
            return False
        jobs = world.jobs()
        if any(j.state == q.RUNNING or (j.state == q.QUEUED and not (j.error and j.error.startswith("waiting")))
               for j in jobs):
            return False
        live = {j.path for j in jobs if j.state in q.LIVE_STATES}
        return all(str(p) in live for p in _audio_files(world.inbox))

    deadline = time.monotonic() + timeout
    while True:
        # Quiet twice, a watcher rescan apart: a file between its settle and its job is not quiet.
        if quiet():
            time.sleep(0.6)
            if quiet():
                return
        if time.monotonic() > deadline:
            stuck = [(j.id[:8], j.relpath, j.state, j.stage, j.error) for j in world.jobs() if j.state in q.LIVE_STATES]
            waiting = [str(p.relative_to(world.inbox)) for p in _audio_files(world.inbox)]
            raise InvariantViolation(f"I4: not quiescent after {timeout:.0f}s; live jobs {stuck}; inbox {waiting}; "
                                     f"notifications pending {world.notifications_pending()}")
        time.sleep(0.2)


def _deleted(client: StreamClient, media_id: str) -> bool:
    try:
        client.delete_media(media_id)
    except NotFoundError:
        return True
    except APIError:
        return False
    return True


# -- the simulation -----------------------------------------------------------------------------------


class Simulation:
    """Seeded events against a World, checking the invariants every ``check_every`` steps and at the end."""

    NAMES = ["ep1", "ep2", "ep3", "show/ep4", "show/ep5", "intro", "outro"]
    FAULTS = {"server_error": 0.3, "rate_limited": 0.3, "drop_after_commit": 0.25, "transcode_fail": 0.5}

    def __init__(self, root: Path, seed: int, *, check_every: int = 8, hosts: int = 1, queue_url: str | None = None,
                 clock_offsets: Sequence[float] = ()):
        self.seed = seed
        self.rng = random.Random(seed)
        self.world = World(root, seed=seed, hosts=hosts, queue_url=queue_url, clock_offsets=clock_offsets)
        self.dead: set[int] = set()  # daemons killed and not started again yet
        self.model = Model()
        self.check_every = check_every
        self.steps = 0
        self.events: Counter = Counter()
        self.faults_injected: Counter = Counter()
        self.checks: Counter = Counter()
        self.history: list[str] = []

    # Each event: (weight, method). Add new kinds of events here.
    def _events(self):
        return [
            (10, self.drop_new), (4, self.drop_identical), (3, self.replace), (2, self.rename), (2, self.delete),
            (1, self.truncate), (1, self.append), (2, self.retry), (1, self.cancel), (1, self.reload),
            (1, self.kill_and_restart), (2, self.api_fault), (1, self.delete_media), (1, self.occupy),
        ]

    def run(self, steps: int) -> dict:
        self.world.start()
        try:
            for _ in range(steps):
                weights, events = zip(*self._events())
                event = self.rng.choices(events, weights)[0]
                detail = event()
                self.steps += 1
                self.events[event.__name__] += 1
                self.history.append(f"{self.steps}: {event.__name__} {detail or ''}".rstrip())
                time.sleep(self.rng.uniform(0, 0.4))  # let the daemon get part of the way
                if self.steps % self.check_every == 0:
                    self.check()
            self.check()
        except AssertionError as exc:
            raise InvariantViolation(
                f"{exc}\nseed {self.seed}, after {self.steps} steps; rerun with INGESTD_SIM_SEED={self.seed} "
                f"INGESTD_SIM_STEPS={self.steps}\nlast events:\n  " + "\n  ".join(self.history[-15:])
            ) from exc
        finally:
            self.world.stop()
        return {"seed": self.seed, "steps": self.steps, "events": dict(self.events),
                "faults_injected": dict(self.faults_injected), "invariant_checks_passed": dict(self.checks)}

    def check(self) -> None:
        self.world.faults()  # faults end at a quiescent point, so retries can finish
        for n, daemon in enumerate(self.world.daemons):
            if n not in self.dead and daemon.proc.poll() is not None:
                raise InvariantViolation("the daemon exited:\n" + daemon.log()[-3000:])
        wait_quiescent(self.world)  # a killed daemon's jobs were taken over by the others
        self._note_settled()
        self.checks.update(check_invariants(self.world, self.model))
        for n in sorted(self.dead):
            self.world.start(n)
        self.dead.clear()

    def _note_settled(self) -> None:
        for path in _audio_files(self.world.inbox):
            with contextlib.suppress(OSError):
                self.model.settled.add(self.model.note(path.read_bytes()))

    # -- people --------------------------------------------------------------------------------------

    def _inbox_file(self) -> Path | None:
        """One audio file now in the inbox, drawn at random; None when there is none."""
        files = sorted(_audio_files(self.world.inbox))
        return self.rng.choice(files) if files else None

    def _name(self, fresh: bool) -> str:
        if fresh or not self.model.names:
            name = self.rng.choice(self.NAMES) + f"-{self.steps}" + AUDIO_SUFFIX
        else:
            name = self.rng.choice(self.model.names)
        self.model.names.append(name)
        return name

    def _new_content(self, staging: Path) -> bytes:
        if self.rng.random() < 0.08:
            write_wav_of_size(staging, self.rng.randint(5, 11) * 1024 * 1024, freq=self.rng.uniform(200, 2000))
        else:
            write_wav(staging, self.rng.choice([0.2, 0.3, 0.5]), freq=round(self.rng.uniform(200, 2000), 1))
        return staging.read_bytes()

    def _put(self, name: str, data: bytes | None = None) -> str:
        """Write a whole file beside the inbox and move it in, as a careful copy tool does."""
        staging = self.world.root / "staging" / name
        staging.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            data = self._new_content(staging)
        else:
            staging.write_bytes(data)
        target = self.world.inbox / name
        target.parent.mkdir(parents=True, exist_ok=True)
        self._forget(target)
        os.replace(staging, target)
        key = self.model.note(data)
        self.model.settled.add(key)
        return key

    def _forget(self, path: Path) -> None:
        """The file at ``path`` is about to be overwritten or removed by a person: its content need not survive."""
        with contextlib.suppress(OSError):
            self.model.destroyed.add(digest(path.read_bytes()))

    def drop_new(self):
        name = self._name(fresh=self.rng.random() < 0.6)
        return f"{name} {self._put(name)}"

    def drop_identical(self):
        if not self.model.contents:
            return self.drop_new()
        key = self.rng.choice(sorted(self.model.contents))
        name = self._name(fresh=self.rng.random() < 0.7)
        self._put(name, self.model.contents[key])
        return f"{name} {key}"

    def replace(self):
        path = self._inbox_file()
        if path is None:
            return self.drop_new()
        return f"{path.name} {self._put(str(path.relative_to(self.world.inbox)))}"

    def rename(self):
        path = self._inbox_file()
        if path is None:
            return None
        target = self.world.inbox / self._name(fresh=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, target)
        return f"{path.name} -> {target.name}"

    def delete(self):
        path = self._inbox_file()
        if path is None:
            return None
        self._forget(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return path.name

    def _edit_in_place(self, edit) -> str | None:
        path = self._inbox_file()
        if path is None:
            return None
        try:
            with open(path, "r+b") as f:
                before = f.read()
                self.model.destroyed.add(digest(before))
                edit(f, len(before))
                self.model.tainted_inodes.add(os.fstat(f.fileno()).st_ino)
                f.seek(0)
                after = f.read()
        except FileNotFoundError:
            return None
        # The edited file may have been filed meanwhile; it counts only while it is still in the inbox.
        if path.exists():
            self.model.settled.add(self.model.note(after))
        return path.name

    def truncate(self):
        return self._edit_in_place(lambda f, size: f.truncate(size // 2))

    def append(self):
        return self._edit_in_place(lambda f, size: (f.seek(0, 2), f.write(os.urandom(4096))))

    # -- the operator ---------------------------------------------------------------------------------

    def retry(self):
        failed = [j for j in self.world.jobs() if j.state in (q.FAILED, q.CANCELLED)]
        if not failed:
            return None
        job = self.rng.choice(failed)
        code, _ = self.world.cli("jobs", "retry", job.id)
        return f"{job.relpath} exit {code}"

    def cancel(self):
        live = [j for j in self.world.jobs() if j.state in q.LIVE_STATES]
        if not live:
            return None
        job = self.rng.choice(live)
        code, _ = self.world.cli("jobs", "cancel", job.id)
        return f"{job.relpath} exit {code}"

    def reload(self):
        for daemon in self.world.daemons:
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGHUP)

    def kill_and_restart(self):
        """One daemon SIGKILLed: alone, it restarts at once; beside others, they take over and it returns later."""
        which = self.rng.randrange(len(self.world.daemons))
        if which in self.dead or len(self.dead) == len(self.world.daemons) - 1 > 0:
            return None
        self.world.kill(which)
        if len(self.world.daemons) == 1:
            self.world.start(which)
        else:
            self.dead.add(which)
        return f"host{which}"

    def occupy(self):
        """Someone puts their own file in done/ where a file of ours may be filed: it must never be replaced."""
        name = self._name(fresh=False)
        path = self.world.done / name
        if path.exists() or filing.report_path(path, failed=False).exists():
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"someone else's file {self.steps}\n".encode()
        path.write_bytes(data)
        self.model.strangers[path] = data
        return name

    # -- the service ----------------------------------------------------------------------------------

    def api_fault(self):
        kind = self.rng.choice(sorted(self.FAULTS))
        self.world.faults(**{kind: self.FAULTS[kind]})
        self.faults_injected[kind] += 1
        return kind

    def delete_media(self):
        done = [m for m in self.world.emulator.all_media() if m["status"] == "done"]
        if not done:
            return None
        media_id = self.rng.choice(sorted(m["id"] for m in done))
        with self.world.client() as client:
            # A person retries through the faults ingestd is facing too; gone already counts as deleted.
            wait_for(lambda: _deleted(client, media_id), timeout=30, interval=0.1, what=f"media {media_id} deleted")
        self.model.deleted_media.add(media_id)
        self.faults_injected["media_deleted"] += 1
        return media_id
