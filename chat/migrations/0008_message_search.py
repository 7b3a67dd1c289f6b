"""Full-text search of finished messages with the database's own engine.

PostgreSQL: a GIN index on to_tsvector('simple', content) over finished
messages (chat.search's query repeats that expression and predicate, so the
planner uses it). SQLite: an FTS5 table (unicode61, diacritics kept) filled
by triggers when a message is inserted finished or its content or status
changes, so appends to a streaming message (which set neither) cost nothing
more. SQLite drops a table's triggers when Django rebuilds the table: a later
migration that remakes chat_message must create them again
(tests/test_search.py checks they exist).
"""

from django.db import migrations

SQLITE = [
    "CREATE VIRTUAL TABLE chat_message_fts USING fts5(content, tokenize = 'unicode61 remove_diacritics 0')",
    "CREATE TRIGGER chat_message_fts_insert AFTER INSERT ON chat_message WHEN new.status <> 'streaming' BEGIN"
    " INSERT INTO chat_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER chat_message_fts_update AFTER UPDATE OF content, status ON chat_message BEGIN"
    " DELETE FROM chat_message_fts WHERE rowid = old.id;"
    " INSERT INTO chat_message_fts(rowid, content) SELECT new.id, new.content WHERE new.status <> 'streaming'; END",
    "CREATE TRIGGER chat_message_fts_delete AFTER DELETE ON chat_message BEGIN"
    " DELETE FROM chat_message_fts WHERE rowid = old.id; END",
    "INSERT INTO chat_message_fts(rowid, content) SELECT id, content FROM chat_message WHERE status <> 'streaming'",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS chat_message_fts_insert",
    "DROP TRIGGER IF EXISTS chat_message_fts_update",
    "DROP TRIGGER IF EXISTS chat_message_fts_delete",
    "DROP TABLE IF EXISTS chat_message_fts",
]
POSTGRESQL = [
    "CREATE INDEX chat_message_search ON chat_message USING GIN (to_tsvector('simple'::regconfig, content))"
    " WHERE status <> 'streaming'",
]
POSTGRESQL_REVERSE = ["DROP INDEX IF EXISTS chat_message_search"]


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor):
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0007_tokenusage_estimated"),
    ]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRESQL}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRESQL_REVERSE}),
        ),
    ]
