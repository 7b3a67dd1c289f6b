"""Search (PROTOCOL.md "Search"): one corpus, the same answers on SQLite and PostgreSQL (the pg leg runs it)."""

from __future__ import annotations

from django.db import connection
from django.test import Client

from chat import turns
from tests.base import ChatTestCase

# (role, text, finished): a user message and its answer per pair of lines.
CORPUS = [
    ("user", "The Quick brown fox jumps", True),
    ("assistant", "A quick answer about foxes and café culture", True),
    ("user", "café au lait", True),
    ("assistant", "cafe without its accent", True),
    ("user", "foo-bar baz_qux 42 items", True),
    ("assistant", "streaming words arrive here", False),
]
QUERIES = {
    "quick": [0, 1],
    "QUICK fox": [0],
    "foxes": [1],
    "café": [1, 2],
    "cafe": [3],
    "bar": [4],
    "qux": [4],
    "42 items": [4],
    "the": [0],
    "streaming words": [5],
    "words missing": [],
    "xyz": [],
}


class SearchTests(ChatTestCase):
    def setUp(self) -> None:
        self.alice = self.make_user("alice")
        self.thread = self.make_thread(self.alice, "Corpus")
        self.ids = []
        for index in range(0, len(CORPUS), 2):
            turn_id = f"t{index}"
            (_, question, _), (_, answer, finished) = CORPUS[index], CORPUS[index + 1]
            self.ids.append(turns.persist_user_turn(self.thread.pk, turn_id, question).id)
            shell = turns.persist_assistant_shell(self.thread.pk, turn_id).id
            for word in answer.split(" "):
                turns.append_content(shell, word + " ")
            if finished:
                turns.finalize_assistant_turn(shell, "completed")
            self.ids.append(shell)
        bob = self.make_user("bob")
        other = self.make_thread(bob, "Bob's")
        turns.persist_user_turn(other.pk, "b1", "quick fox café streaming words")
        self.http = Client()
        self.http.force_login(self.alice)

    def search(self, q: str):
        return self.http.get("/api/search/", {"q": q})

    def test_corpus_answers_the_same_on_every_database(self):
        """Whole words, any case, accents kept, no stemming or stop words, streaming text too; own messages only."""
        for query, expected in QUERIES.items():
            with self.subTest(query=query):
                response = self.search(query)
                self.assertEqual(response.status_code, 200)
                found = sorted(r["message_id"] for r in response.json()["results"])
                self.assertEqual(found, sorted(self.ids[i] for i in expected))

    def test_result_shape_and_snippet(self):
        """A result names its thread and message; the snippet is under 300 characters around the match."""
        long_text = "filler " * 200 + "needle in the end " + "tail " * 100
        message_id = turns.persist_user_turn(self.thread.pk, "long", long_text).id
        (result,) = self.search("needle").json()["results"]
        self.assertEqual(set(result), {"thread_id", "thread_title", "message_id", "role", "snippet", "created_at"})
        self.assertEqual((result["thread_id"], result["thread_title"]), (self.thread.pk, "Corpus"))
        self.assertEqual((result["message_id"], result["role"]), (message_id, "user"))
        self.assertLess(len(result["snippet"]), 300)
        self.assertIn("needle", result["snippet"])

    def test_a_finished_stream_is_found_through_the_index(self):
        """Finalizing a streaming answer puts it in the index; it is still found."""
        streaming = self.ids[5]
        self.assertNotIn(streaming, self.indexed_ids())
        turns.finalize_assistant_turn(streaming, "completed")
        self.assertIn(streaming, self.indexed_ids())
        self.assertEqual([r["message_id"] for r in self.search("arrive").json()["results"]], [streaming])

    def indexed_ids(self) -> set[int]:
        """The messages the database's index holds."""
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("SELECT rowid FROM chat_message_fts")
            else:
                cursor.execute("SELECT id FROM chat_message WHERE status <> 'streaming'")  # the index's predicate
            return {row[0] for row in cursor.fetchall()}

    def test_search_goes_through_the_index(self):
        """PostgreSQL plans the query on chat_message_search; SQLite has its FTS table and triggers."""
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute(
                    "EXPLAIN SELECT id FROM chat_message WHERE status <> 'streaming'"
                    " AND to_tsvector('simple'::regconfig, content) @@ to_tsquery('simple'::regconfig, 'quick')"
                )
                plan = "\n".join(row[0] for row in cursor.fetchall())
                self.assertIn("chat_message_search", plan)
            else:
                cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE 'chat_message_fts%'")
                names = {row[0] for row in cursor.fetchall()}
                for name in ("chat_message_fts", "chat_message_fts_insert", "chat_message_fts_update"):
                    self.assertIn(name, names)

    def test_query_length_is_checked_after_trimming(self):
        """q shorter than 2 or longer than 200 characters once trimmed: 400 invalid_query."""
        for q in ("", " a ", "x" * 201):
            response = self.search(q)
            self.assertEqual(response.status_code, 400, q)
            self.assertEqual(response.json()["error"]["code"], "invalid_query")
        self.assertEqual(self.http.get("/api/search/").status_code, 400)
        self.assertEqual(self.search("  ab  ").status_code, 200)
        self.assertEqual(self.search("!!!").json(), {"results": []})

    def test_anonymous_search_is_refused(self):
        """Search needs a logged-in user."""
        self.assertEqual(Client().get("/api/search/", {"q": "quick"}).status_code, 401)
