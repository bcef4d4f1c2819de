"""``python -m bench NAME [--quick]``: run one figure, or ``all`` of them, and print a markdown table."""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import sys
import time
from pathlib import Path

import ingestd

from . import Row, Scale, log, markdown
from . import backlog, daemon, emulator, hosts, latency, memory, overhead, throughput

FIGURES = {
    "throughput": throughput.run,
    "daemon": daemon.run,
    "memory": memory.run,
    "overhead": overhead.run,
    "backlog": backlog.run,
    "latency": latency.run,
    "emulator": emulator.run,
    "hosts": hosts.run,
}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figure", choices=[*FIGURES, "all"])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1",
                        help="smaller sizes, for a run of a couple of minutes (or BENCH_QUICK=1)")
    args = parser.parse_args(argv)
    scale = Scale(quick=args.quick)
    # As an installed package is: byte-compiled once, not on every start of a measured command.
    compileall.compile_dir(Path(ingestd.__file__).parent, quiet=1)
    names = list(FIGURES) if args.figure == "all" else [args.figure]
    rows: list[Row] = []
    started = time.perf_counter()
    for name in names:
        log(f"{name}…")
        began = time.perf_counter()
        rows += FIGURES[name](scale)
        log(f"{name} took {time.perf_counter() - began:.1f}s")
    print(f"{'quick' if scale.quick else 'full'} run on {machine()}, {time.perf_counter() - started:.0f}s\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
