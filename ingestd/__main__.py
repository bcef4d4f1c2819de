"""The ``ingestd`` command, and ``python -m ingestd``."""

import gc
import sys


def run() -> int:
    # What loading makes lives as long as the process: no collection walks it while it is made (over a hundred
    # did), and once it is frozen no later one does. About 45 ms of every start.
    gc.disable()
    try:
        from .cli import main
    finally:
        gc.freeze()
        gc.enable()
    return main()


if __name__ == "__main__":
    sys.exit(run())
