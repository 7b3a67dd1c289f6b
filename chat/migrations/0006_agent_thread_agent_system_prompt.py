"""Agents configured by staff; a thread names its agent and adds its own system prompt."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0005_message_parent_thread_active_leaf"),
    ]

    operations = [
        migrations.CreateModel(
            name="Agent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("description", models.CharField(blank=True, default="", max_length=300)),
                (
                    "provider",
                    models.CharField(
                        choices=[("local", "Local"), ("openai", "OpenAI-compatible")], default="local", max_length=16
                    ),
                ),
                ("base_url", models.URLField(blank=True, default="", max_length=500)),
                ("api_key", models.CharField(blank=True, default="", max_length=500)),
                ("model", models.CharField(blank=True, default="", max_length=100)),
                ("system_prompt", models.TextField(blank=True, default="")),
                ("tools", models.JSONField(blank=True, default=list)),
                ("is_default", models.BooleanField(default=False, editable=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["-is_default", "name", "id"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("is_default", True)), fields=("is_default",), name="chat_agent_one_default"
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="thread",
            name="agent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="threads",
                to="chat.agent",
            ),
        ),
        migrations.AddField(
            model_name="thread",
            name="system_prompt",
            field=models.TextField(blank=True, default=""),
        ),
    ]
