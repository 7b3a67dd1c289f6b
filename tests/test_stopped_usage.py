"""Usage of stopped turns: an estimate, marked `estimated`, when the provider reported none."""

from __future__ import annotations

import math

from asgiref.sync import sync_to_async
from django.test import override_settings
from django.utils import timezone

from chat.models import Message, TokenUsage
from chat.reports import usage_report
from tests.sockets import receive_until, receive_until_turn_ends
from tests.test_socket import SocketTestCase, finish_turn


class StoppedUsageTests(SocketTestCase):
    @override_settings(LOCAL_MODEL_DELAY_MS=20)
    async def test_a_cancelled_turn_stores_an_estimate_counted_in_the_usage_report(self):
        """Stop mid-answer: usage estimated from the text (4 characters a token), stored once, in the report."""
        communicator, _ = await self.connect()
        await self.send(communicator, {"type": "user_message", "content": "/lorem 300", "turn_id": "stop"})
        message_id = (await receive_until(communicator, "message_delta"))[-1]["message_id"]
        await self.send(communicator, {"type": "cancel", "turn_id": "stop"})
        end = (await receive_until_turn_ends(communicator, "stop"))[-1]
        await finish_turn(self.thread.pk, "stop")
        self.assertEqual(end["data"]["status"], "cancelled")
        content = (await Message.objects.aget(pk=message_id)).content
        usage = end["data"]["usage"]
        self.assertEqual(usage["estimated"], True)
        self.assertEqual(usage["prompt_tokens"], math.ceil(len("/lorem 300") / 4))
        self.assertEqual(usage["completion_tokens"], math.ceil(len(content) / 4))
        self.assertEqual(usage["model"], "local")
        row = await TokenUsage.objects.aget(message_id=message_id)
        self.assertEqual((row.estimated, row.total_tokens), (True, usage["total_tokens"]))
        today = timezone.now().date()
        report = await sync_to_async(usage_report)(today, today)
        self.assertEqual(report["totals"]["total_tokens"], usage["total_tokens"])
        _, snapshot = await self.connect()
        self.assertEqual(snapshot["messages"][-1]["usage"], usage)

    @override_settings(LOCAL_MODEL_DELAY_MS=0)
    async def test_reported_usage_is_not_marked_estimated(self):
        """A turn whose provider reported usage shows it as it is, without `estimated`."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "hello", "t1")
        self.assertNotIn("estimated", frames[-1]["data"]["usage"])
        self.assertFalse((await TokenUsage.objects.aget(message_id=frames[-1]["message_id"])).estimated)
