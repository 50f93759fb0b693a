"""Run ``varbayes ARGV...`` in this process, for the fault tests to signal, kill or starve.

``python tests/faults/killable.py [--slow-write SECONDS] [--file-size-limit BYTES] ARGV...``

- ``--slow-write``: every atomic write waits that long before its ``fsync``, while its
  temporary file is on disk but not yet in place, so that a kill lands inside a write;
- ``--file-size-limit``: ``RLIMIT_FSIZE``, so that every write past that size fails with
  EFBIG, as a write to a full disk fails with ENOSPC.
"""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> int:
    if argv[:1] == ["--file-size-limit"]:
        import resource

        limit, argv = int(argv[1]), argv[2:]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if argv[:1] == ["--slow-write"]:
        delay, argv = float(argv[1]), argv[2:]
        fsync = os.fsync

        def slow_fsync(fd: int) -> None:
            time.sleep(delay)
            fsync(fd)

        os.fsync = slow_fsync
    from varbayes.inference.cli import main as varbayes

    return varbayes(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
