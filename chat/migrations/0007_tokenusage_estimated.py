"""Usage of a stopped turn whose provider reported none is an estimate, marked as such."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0006_agent_thread_agent_system_prompt"),
    ]

    operations = [
        migrations.AddField(
            model_name="tokenusage",
            name="estimated",
            field=models.BooleanField(default=False),
        ),
    ]
