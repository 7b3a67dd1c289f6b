"""Data migrations: threads stored before versions become linear paths."""

from __future__ import annotations

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.base import ChatTransactionTestCase

BEFORE = [("chat", "0004_staff_list_indexes")]
AFTER = [("chat", "0005_message_parent_thread_active_leaf")]


class VersionMigrationTests(ChatTransactionTestCase):
    def tearDown(self) -> None:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        super().tearDown()

    def test_existing_messages_follow_each_other_and_the_last_is_the_active_leaf(self):
        """Each old message gets the one before it (by seq) as parent; the thread's active leaf is its last."""
        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE)
        apps = executor.loader.project_state(BEFORE).apps
        user = apps.get_model("auth", "User").objects.create(username="old")
        thread = apps.get_model("chat", "Thread").objects.create(owner=user, title="old", last_seq=3)
        empty = apps.get_model("chat", "Thread").objects.create(owner=user, title="empty")
        message = apps.get_model("chat", "Message")
        ids = [
            message.objects.create(thread=thread, role=role, seq=seq, turn_id=f"t{seq}", content=f"m{seq}").pk
            for seq, role in ((1, "user"), (2, "assistant"), (3, "user"))
        ]
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        apps = executor.loader.project_state(AFTER).apps
        message = apps.get_model("chat", "Message")
        parents = list(message.objects.filter(thread_id=thread.pk).order_by("seq").values_list("parent_id", flat=True))
        self.assertEqual(parents, [None, ids[0], ids[1]])
        threads = apps.get_model("chat", "Thread").objects
        self.assertEqual(threads.get(pk=thread.pk).active_leaf_id, ids[2])
        self.assertIsNone(threads.get(pk=empty.pk).active_leaf_id)
