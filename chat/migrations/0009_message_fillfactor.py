"""Room on each page of chat_message for the new versions of a streaming message's row (PostgreSQL).

Every commit of the delta writer updates each streaming message's row
(its length, chat.turns._grow). PostgreSQL can put the new version on the
same page without touching any index (a HOT update) only when the page has
room; full pages sent about 70% of those updates to another page, with a new
entry in each of the table's indexes. At fillfactor 80, about 85% are HOT
(bench/streams.py, cluster K=442). SQLite has no such setting.
"""

from django.db import migrations


def _fillfactor(value: int):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE chat_message SET (fillfactor = {value})")

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0008_message_search"),
    ]

    operations = [
        migrations.RunPython(_fillfactor(80), _fillfactor(100)),
    ]
