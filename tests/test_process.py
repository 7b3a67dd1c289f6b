"""Process tuning done once at start-up (agents.process.tune)."""

from __future__ import annotations

import gc
import sys

from agents import process
from tests.base import ChatTestCase


class TuneTests(ChatTestCase):
    def test_start_up_objects_are_frozen_out_of_full_collections(self) -> None:
        """A full collection must not walk the modules and settings: it stalled every stream for 70-190 ms."""
        interval = sys.getswitchinterval()
        self.addCleanup(sys.setswitchinterval, interval)
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        process.tune()
        self.assertGreater(gc.get_freeze_count(), 10_000)
        self.assertAlmostEqual(sys.getswitchinterval(), 0.0005)
