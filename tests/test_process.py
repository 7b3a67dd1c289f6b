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
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        gc.unfreeze()
        process.tune()
        self.assertGreater(gc.get_freeze_count(), 10_000)
        self.assertAlmostEqual(sys.getswitchinterval(), 0.0005)

    def test_the_young_generation_holds_gc_gen0_threshold_objects(self) -> None:
        """A young generation of 10,000 objects: at Python's 700, a burst's promotions set off full collections."""
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        self.addCleanup(gc.unfreeze)
        process.tune()
        self.assertEqual(gc.get_threshold()[0], 10_000)
        with self.settings(GC_GEN0_THRESHOLD=50_000):
            process.tune()
        self.assertEqual(gc.get_threshold()[0], 50_000)


class AutobahnTests(ChatTestCase):
    def test_frames_sent_do_not_colour_autobahns_unlogged_debug_arguments(self) -> None:
        """autobahn's debug arguments, built for every frame sent, are plain text even with click installed."""
        from autobahn import util

        import chatproject.asgi  # noqa: F401  (the served application sets it up)

        self.assertEqual(util.hlval(42), "42")
        self.assertEqual(util.hltype(self.test_frames_sent_do_not_colour_autobahns_unlogged_debug_arguments)[:2], "<t")
