"""How a serving process (daphne or an agent worker) is set up for many streams.

Every database call hands the GIL to Channels' database thread and back; at
Python's default 5 ms switch interval a busy event loop makes each hop wait
that long (bench/streams.py). `kill -USR1` logs the delta writer's totals,
which bench/streams.py reads to count commits.
"""

from __future__ import annotations

import signal
import sys
import threading

from django.conf import settings

from . import writer


def tune() -> None:
    """Shorten the GIL switch interval and log the writer's totals on SIGUSR1 (from the main thread only)."""
    sys.setswitchinterval(settings.GIL_SWITCH_INTERVAL_MS / 1000)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, writer.log_totals)
