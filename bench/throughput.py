"""Figure 1: one large file to the emulator over loopback, ingestd against the curl recipe.

The baseline does what the API documentation's recipe does: cut the file into parts
with ``dd``, ``md5sum`` each part, send each with ``curl -F``, then complete with
curl. ````StreamClient`` takes the same steps in this process
(create, each part streamed with its MD5 computed on the way, complete);
``ingestd upload`` runs the whole pipeline in a new process (start-up, probe,
duplicate check, cost check, create, parts, complete, transcode poll). Contenders alternate, each against a fresh emulator
process, and both read the source from the page cache.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingestd.client import Part, StreamClient, plan_parts
from ingestd.media_schema import CreateRequest

from . import (MIB, Contest, EmulatorProcess, Row, Scale, cached_source, children_cpu, ingestd_command, ratio_rows, rotated,
               run_measured, write_config)

CHUNK = 50 * MIB
TARGET_RATIO = 1.5


def curl_recipe(base_url: str, source: Path, work: Path, chunk: int = CHUNK) -> float:
    """The seed's shell recipe, step by step, as a script would run it; returns the seconds its part loop took."""
    auth = ["-H", "Authorization: Bearer test-token"]
    created = subprocess.run(
        ["curl", "-sS", "--fail-with-body", *auth, "-H", "Content-Type: application/json",
         "-d", json.dumps({"type": "audio", "title": source.stem}), f"{base_url}/media/create"],
        check=True, capture_output=True, text=True,
    )
    media_id = json.loads(created.stdout)["data"]["id"]
    total = source.stat().st_size
    parts_started = time.perf_counter()
    for index, start in enumerate(range(0, total, chunk)):
        length = min(chunk, total - start)
        part = work / f"part.{index}"
        subprocess.run(["dd", f"if={source}", f"of={part}", "bs=1M", f"skip={start}", f"count={length}",
                        "iflag=skip_bytes,count_bytes", "status=none"], check=True)
        md5 = subprocess.run(["md5sum", str(part)], check=True, capture_output=True, text=True).stdout.split()[0]
        subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-o", "/dev/null", *auth,
             "-H", f"Content-Range: bytes {start}-{start + length - 1}/{total}",
             "-F", f"file=@{part}", "-F", f"index={index}", "-F", f"hash={md5}", f"{base_url}/media/{media_id}/part"],
            check=True,
        )
        part.unlink()
    window = time.perf_counter() - parts_started
    subprocess.run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null", *auth, f"{base_url}/media/{media_id}/complete"], check=True)
    return window


def client_steps(base_url: str, source: Path) -> None:
    """The recipe's steps through :class:`StreamClient` alone: create, stream each part (MD5 on the way), complete."""
    total = source.stat().st_size
    with StreamClient(base_url, token="test-token") as client:
        media = client.create_media(CreateRequest(type="audio", title=source.stem))
        for index, start, length in plan_parts(total, CHUNK):
            client.upload_part(media.id, Part(source, index, start, length, total))
        client.complete_upload(media.id)


def run(scale: Scale) -> list[Row]:
    if shutil.which("curl") is None:
        raise RuntimeError("the throughput baseline needs curl on PATH")
    rows: list[Row] = []
    for size in scale.pick((256 * MIB, 1024 * MIB), (256 * MIB,)):
        rows += _one_size(size, scale.rounds(3, 2))
    return rows + startup_rows()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _one_size(size: int, rounds: int) -> list[Row]:
    contenders = ["curl recipe", "StreamClient", "ingestd upload", "ingestd upload, parallel_parts=2"]
    contest = Contest("throughput", size, contenders)
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as scratch:
        root = Path(scratch)
        source = cached_source(root, size)
        for round_no in range(rounds):
            for name in rotated(contenders, round_no):
                run_dir = root / f"run-{round_no}-{contenders.index(name)}"
                with EmulatorProcess(run_dir / "emulator") as emulator:
                    if name == "curl recipe":
                        (run_dir / "parts").mkdir()
                        # dd, md5sum and curl are reaped as each ends; the emulator only after this.
                        cpu_before, started = children_cpu(), time.perf_counter()
                        curl_recipe(emulator.base_url, source, run_dir / "parts")
                        seconds, used = time.perf_counter() - started, children_cpu() - cpu_before
                    elif name == "StreamClient":
                        cpu_before, started = _own_cpu(), time.perf_counter()
                        client_steps(emulator.base_url, source)
                        seconds, used = time.perf_counter() - started, _own_cpu() - cpu_before
                    else:
                        parallel = 2 if "parallel" in name else 1
                        config = write_config(run_dir, emulator.base_url,
                                              upload={"chunk_size": CHUNK, "parallel_parts": parallel, "workers": 1})
                        measured = run_measured(ingestd_command("upload", "--config", str(config), str(source)),
                                                log_path=run_dir / "upload.log")
                        if measured.returncode != 0:
                            raise RuntimeError(f"ingestd upload failed; see {run_dir / 'upload.log'}")
                        seconds, used = measured.seconds, measured.cpu
                contest.record(name, round_no, rounds, seconds, used)
                shutil.rmtree(run_dir)
    label = f"{size // MIB} MiB"
    rates, cpu = contest.rates, contest.cpu
    rows = contest.rate_rows("throughput", "50 MiB parts")
    for name in contenders[1:]:
        rows += ratio_rows("throughput", f"{label}: {name} / curl recipe", rates[name], rates["curl recipe"], TARGET_RATIO)
    cpu_ratios = [i / c for i, c in zip(cpu["ingestd upload"], cpu["curl recipe"])]
    rows.append(Row("throughput", f"{label}: CPU per GiB, ingestd upload / curl recipe, per round",
                    ", ".join(f"{r:.2f}" for r in cpu_ratios), "≤ 1 each", max(cpu_ratios) <= 1))
    # What 1.5× leaves for everything but the parts: the recipe's best time / 1.5, less StreamClient's best (create,
    # parts and complete, no start-up), set beside what a new process takes to load its libraries.
    best_seconds = {name: size / 1e6 / max(rates[name]) for name in contenders}
    budget = best_seconds["curl recipe"] / TARGET_RATIO - best_seconds["StreamClient"]
    rows.append(Row("throughput", f"{label}: time left at {TARGET_RATIO}× for start-up, probe, queue and transcode poll",
                    f"{budget * 1000:.0f} ms (curl recipe {best_seconds['curl recipe']:.2f} s / {TARGET_RATIO}"
                    f" − StreamClient {best_seconds['StreamClient']:.2f} s)"))
    return rows


STARTUPS = {
    "an interpreter doing nothing": "pass",
    "an interpreter importing httpx, pydantic, PyYAML, structlog, mutagen and sqlite3":
        "import httpx, pydantic, yaml, structlog, mutagen, sqlite3",
    # As the command loads them: with the collector off (ingestd/__main__.py).
    "an interpreter importing what `ingestd upload` runs on": "import gc; gc.disable(); import ingestd.cli, ingestd.oneshot",
}


def startup_rows(runs: int = 7) -> list[Row]:
    """Least wall time of a new process that only imports, over ``runs`` runs: the floor under any one-shot command."""
    rows = []
    for what, code in STARTUPS.items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - started)
        rows.append(Row("throughput", f"start-up: {what}, least of {runs}", f"{min(times) * 1000:.0f} ms"))
    return rows
