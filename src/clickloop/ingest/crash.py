"""A testing hook for crash-recovery tests: die (SIGKILL) at a named point.

``CLTEST_CRASH_AT=<point>:<n>`` in the environment makes the process kill
itself the n-th time it reaches ``<point>`` — so reliability tests can crash
an ingester exactly between staging and committing, or between the lake
commit and the bus commit, not only at random moments. Unset (always, in
production) it costs one dictionary lookup at start-up.

Points: ``batch-staged``, ``batch-committed``, ``stream-staged``,
``stream-lake-committed``.

>>> CrashHook().at("stream-staged")            # no-op unless CLTEST_CRASH_AT says so
"""

from __future__ import annotations

import os
import signal
from typing import Final

CRASH_ENV: Final = "CLTEST_CRASH_AT"  # not CLICKLOOP_…: that prefix overrides configuration


class CrashHook:
    def __init__(self) -> None:
        spec = os.environ.get(CRASH_ENV, "")
        point, _, n = spec.partition(":")
        self.point = point
        self.left = int(n) if n.isdigit() else 1

    def at(self, point: str) -> None:
        if self.point and point == self.point:
            self.left -= 1
            if self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)
