"""The subprocess + peak-RSS harness the bench scripts share.

Each measured configuration runs in a fresh child process (``run_child``:
the script itself with its child arguments), so its peak resident memory is
its own. The child measures with ``rss_bytes`` (now) and ``peak_rss_bytes``
(the process' high-water mark, ``ru_maxrss``) and reports one JSON line
(``report``); the parent reads the last line of the child's stdout.

    from harness import peak_rss_bytes, report, rss_bytes, run_child
"""

import json
import os
import resource
import subprocess
import sys
from typing import Optional, Sequence


class ChildFailed(RuntimeError):
    """A child exited non-zero; the message is the tail of its stderr."""


def rss_bytes() -> int:
    """The resident set size of this process now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far, in bytes
    (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(nbytes: float) -> float:
    return nbytes / 2 ** 20


def report(result: dict) -> None:
    """The child's result, as the last line of its stdout."""
    print(json.dumps(result), flush=True)


def run_child(script: str, args: Sequence[str], stderr_tail: int = 2000,
              env: Optional[dict] = None):
    """Run ``python script *args`` in a fresh process and return its
    ``report`` (the JSON of its last stdout line). Raises ``ChildFailed``
    with the tail of its stderr when it exits non-zero."""
    proc = subprocess.run([sys.executable, os.path.abspath(script), *map(str, args)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ChildFailed(proc.stderr.strip()[-stderr_tail:])
    return json.loads(proc.stdout.strip().splitlines()[-1])
