"""``ingestd emulator``: serve the local stand-in API in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from ingestd.config import parse_size

from ._settings import Account, EmulatorSettings, Faults


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Account()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8780, help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--data", type=Path, help="directory for uploaded parts and files (default: a temporary directory)")
    parser.add_argument("--token", default=defaults.token, help="bearer token to accept (default: %(default)s)")
    parser.add_argument("--public-key", default=defaults.public_key, help="stream-public-key to accept (default: %(default)s)")
    parser.add_argument("--secret-key", default=defaults.secret_key, help="stream-secret-key to accept (default: %(default)s)")
    parser.add_argument("--transcode-delay", type=float, default=1.0, metavar="SECONDS", help="time spent transcoding (default: %(default)s)")
    parser.add_argument("--min-part-size", type=_size, default=5 * 1024 * 1024, metavar="SIZE", help="smallest non-final part, e.g. 5MiB (default: 5MiB)")
    parser.add_argument("--balance", type=float, default=defaults.balance_usd, metavar="USD", help="account balance for cost checks (default: %(default)s)")
    parser.add_argument("--rate-limit", type=int, metavar="N", help="requests per minute before answering 429 (default: unlimited)")
    parser.add_argument("--strict-official", action="store_true",
                        help="refuse every request form AIOZ's official clients never send (the key pair without Basic,"
                             " list filters as maps or bare strings, part index 0, player_theme_id)")
    faults = parser.add_argument_group("fault injection (shares between 0 and 1)")
    faults.add_argument("--fault-seed", type=int, default=0, metavar="N", help="seed for the fault dice (default: %(default)s)")
    faults.add_argument("--fail-rate", type=_share, default=0.0, metavar="F", help="answer 500 before acting")
    faults.add_argument("--throttle-rate", type=_share, default=0.0, metavar="F", help="answer 429 before acting")
    faults.add_argument("--drop-rate", type=_share, default=0.0, metavar="F", help="act, then close the connection without answering")
    faults.add_argument("--slow-rate", type=_share, default=0.0, metavar="F", help="wait a couple of seconds before answering")
    faults.add_argument("--transcode-fail-rate", type=_share, default=0.0, metavar="F", help="end completed uploads in 'fail'")


def settings_from(args: argparse.Namespace) -> EmulatorSettings:
    return EmulatorSettings(
        accounts=[Account(token=args.token, public_key=args.public_key, secret_key=args.secret_key, balance_usd=args.balance)],
        min_part_size=args.min_part_size,
        transcode_delay=args.transcode_delay,
        rate_limit_per_minute=args.rate_limit,
        strict_official=args.strict_official,
        faults=Faults(
            seed=args.fault_seed,
            server_error=args.fail_rate,
            rate_limited=args.throttle_rate,
            drop_after_commit=args.drop_rate,
            slow=args.slow_rate,
            transcode_fail=args.transcode_fail_rate,
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code."""
    from ._server import Emulator  # here, not at the top: every ingestd command builds this module's arguments

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tempfile.TemporaryDirectory(prefix="ingestd-emulator-") as scratch:
            data_dir = args.data or Path(scratch)
            try:
                emulator = Emulator(settings_from(args), data_dir=data_dir, host=args.host, port=args.port).start()
            except OSError as exc:
                print(f"ingestd emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
                return 1
            print(emulator.base_url, flush=True)
            try:
                stop.wait()
            finally:
                emulator.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
