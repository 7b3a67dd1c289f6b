"""A message's pieces keep their relation to it in Django, without a foreign key in the database.

On PostgreSQL the key's check locked the message's row once per piece at
each delta writer commit; as the streaming rows' versions piled up between
vacuums it grew from about 2 us to 120 us a piece (bench/README.md). Pieces
are only stored by the transaction that grew their message, and deleting a
thread locks its streaming messages first (chat.models.MessageChunk).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0009_message_fillfactor"),
    ]

    operations = [
        migrations.AlterField(
            model_name="messagechunk",
            name="message",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="chunks",
                to="chat.message",
            ),
        ),
    ]
