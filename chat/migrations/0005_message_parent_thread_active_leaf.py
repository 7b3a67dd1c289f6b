"""Versions: each message names the message it follows, each thread its active leaf.

Existing threads were linear: every message follows the one before it in
seq order, and the active leaf is the last message.
"""

import django.db.models.deletion
from django.db import migrations, models


def link_linear_threads(apps, schema_editor):
    Message = apps.get_model("chat", "Message")
    Thread = apps.get_model("chat", "Thread")
    for thread_id in Thread.objects.values_list("pk", flat=True).iterator():
        previous = None
        for message_id in Message.objects.filter(thread_id=thread_id).order_by("seq").values_list("pk", flat=True):
            if previous is not None:
                Message.objects.filter(pk=message_id).update(parent_id=previous)
            previous = message_id
        if previous is not None:
            Thread.objects.filter(pk=thread_id).update(active_leaf_id=previous)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_staff_list_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="children",
                to="chat.message",
            ),
        ),
        migrations.AddField(
            model_name="thread",
            name="active_leaf",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="chat.message",
            ),
        ),
        migrations.RunPython(link_linear_threads, migrations.RunPython.noop, elidable=True),
    ]
