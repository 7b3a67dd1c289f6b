"""Validation of client frames and their error codes (web.frames.parse_frame)."""

from __future__ import annotations

import json

from django.test import SimpleTestCase

from web.frames import MAX_FRAME_BYTES, CancelFrame, FrameError, PingFrame, UserMessageFrame, parse_frame


def frame(**fields) -> str:
    return json.dumps(fields)


def padded_user_message(size: int, char: str = "a") -> str:
    """A valid user_message frame of exactly `size` UTF-8 bytes, its content mostly `char` (topped up with "a")."""
    room = size - len(frame(type="user_message", content="").encode())
    count, rest = divmod(room, len(char.encode()))
    return json.dumps({"type": "user_message", "content": char * count + "a" * rest}, ensure_ascii=False)


class ParseFrameTestCase(SimpleTestCase):
    def assertRefused(self, text: str, code: str, turn_id: str | None = None) -> FrameError:
        with self.assertRaises(FrameError) as caught:
            parse_frame(text)
        error = caught.exception
        self.assertEqual(error.code, code, error.message)
        self.assertEqual(error.turn_id, turn_id)
        self.assertTrue(error.message)
        return error


class ValidFrameTests(ParseFrameTestCase):
    def test_user_message(self) -> None:
        """A user_message with content, turn_id and mentioned_documents parses into its fields."""
        docs = [{"id": 1, "title": "Spec", "document_type": "pdf"}]
        text = frame(type="user_message", content="héllo", turn_id="t-1.a:B_9", mentioned_documents=docs)
        parsed = parse_frame(text)
        self.assertIsInstance(parsed, UserMessageFrame)
        self.assertEqual((parsed.content, parsed.turn_id, parsed.mentioned_documents), ("héllo", "t-1.a:B_9", docs))

    def test_user_message_without_turn_id(self) -> None:
        """turn_id and mentioned_documents are optional."""
        parsed = parse_frame(frame(type="user_message", content="hi"))
        self.assertIsNone(parsed.turn_id)
        self.assertIsNone(parsed.mentioned_documents)

    def test_turn_id_of_64_chars(self) -> None:
        """A turn_id of exactly 64 allowed characters is accepted."""
        self.assertEqual(parse_frame(frame(type="cancel", turn_id="x" * 64)).turn_id, "x" * 64)

    def test_cancel_with_and_without_turn_id(self) -> None:
        """cancel takes an optional turn_id."""
        self.assertEqual(parse_frame(frame(type="cancel", turn_id="t-1")), CancelFrame(type="cancel", turn_id="t-1"))
        self.assertIsNone(parse_frame(frame(type="cancel")).turn_id)

    def test_ping(self) -> None:
        """ping has nothing but its type."""
        self.assertIsInstance(parse_frame(frame(type="ping")), PingFrame)

    def test_frame_of_exactly_the_byte_limit(self) -> None:
        """A frame of exactly 8192 bytes is accepted."""
        text = padded_user_message(MAX_FRAME_BYTES)
        self.assertEqual(len(text.encode()), MAX_FRAME_BYTES)
        self.assertIsInstance(parse_frame(text), UserMessageFrame)

    def test_multibyte_content_within_the_limit(self) -> None:
        """Content of 2-byte characters totalling 8192 bytes is accepted."""
        text = padded_user_message(MAX_FRAME_BYTES, "é")
        self.assertEqual(len(text.encode()), MAX_FRAME_BYTES)
        self.assertIsInstance(parse_frame(text), UserMessageFrame)


class MessageTooLargeTests(ParseFrameTestCase):
    def test_one_byte_over_the_limit(self) -> None:
        """A frame of 8193 bytes is message_too_large."""
        self.assertRefused(padded_user_message(MAX_FRAME_BYTES + 1), "message_too_large")

    def test_limit_counts_utf8_bytes_not_characters(self) -> None:
        """A frame under 8192 characters but over 8192 UTF-8 bytes is message_too_large."""
        text = json.dumps({"type": "user_message", "content": "€" * 3000}, ensure_ascii=False)
        self.assertLess(len(text), MAX_FRAME_BYTES)
        self.assertGreater(len(text.encode()), MAX_FRAME_BYTES)
        self.assertRefused(text, "message_too_large")

    def test_refused_before_it_is_parsed(self) -> None:
        """An oversize frame is refused even when it is not JSON."""
        self.assertRefused("{" * (MAX_FRAME_BYTES + 1), "message_too_large")

    def test_refusal_names_the_frames_turn_id(self) -> None:
        """An oversize frame's refusal names its turn_id, found without parsing; one quoted in text does not count."""
        big = frame(type="user_message", content="a" * MAX_FRAME_BYTES, turn_id="t-1")
        self.assertRefused(big, "message_too_large", "t-1")
        quoted = frame(type="user_message", content='say "turn_id": "x" ' + "a" * MAX_FRAME_BYTES)
        self.assertRefused(quoted, "message_too_large", None)


class InvalidJsonTests(ParseFrameTestCase):
    def test_not_json(self) -> None:
        """Text that is not JSON is invalid_json."""
        for text in ("{", "hello", "", "{'type': 'ping'}", '{"type": "ping",}'):
            with self.subTest(text=text):
                self.assertRefused(text, "invalid_json")

    def test_too_deeply_nested(self) -> None:
        """JSON nested past the parser's recursion limit is invalid_json, not an exception that ends the socket."""
        deep_field = '{"type": "user_message", "content": "hi", "x": ' + "[" * 3000 + "]" * 3000 + "}"
        for text in ("[" * 4000 + "]" * 4000, deep_field):
            with self.subTest(size=len(text)):
                self.assertLessEqual(len(text.encode()), MAX_FRAME_BYTES)
                self.assertRefused(text, "invalid_json")


class InvalidMessageTests(ParseFrameTestCase):
    def test_not_an_object(self) -> None:
        """JSON that is not an object (list, string, number, null) is invalid_message."""
        for text in ("[]", '"ping"', "1", "null", '[{"type": "ping"}]'):
            with self.subTest(text=text):
                self.assertRefused(text, "invalid_message")

    def test_missing_or_non_string_type(self) -> None:
        """An object without a string `type` is invalid_message."""
        for text in ("{}", frame(content="hi"), frame(type=None), frame(type=3), frame(type=["ping"])):
            with self.subTest(text=text):
                self.assertRefused(text, "invalid_message")

    def test_missing_content(self) -> None:
        """A user_message without content is invalid_message."""
        self.assertRefused(frame(type="user_message"), "invalid_message")

    def test_blank_content(self) -> None:
        """Empty or whitespace-only content is invalid_message."""
        for content in ("", "   ", "\n\t"):
            with self.subTest(content=content):
                self.assertRefused(frame(type="user_message", content=content), "invalid_message")

    def test_non_string_content(self) -> None:
        """Content that is not a string (number, list, object, null, bool) is invalid_message."""
        for content in (5, ["hi"], {"text": "hi"}, None, True):
            with self.subTest(content=content):
                self.assertRefused(frame(type="user_message", content=content), "invalid_message")

    def test_bad_turn_id_pattern(self) -> None:
        """A turn_id with characters outside [A-Za-z0-9_.:-], or empty, is invalid_message."""
        for turn_id in ("has space", "slash/no", "ünï", "", "a\nb"):
            with self.subTest(turn_id=turn_id):
                user_message = frame(type="user_message", content="hi", turn_id=turn_id)
                self.assertRefused(user_message, "invalid_message", turn_id)
                self.assertRefused(frame(type="cancel", turn_id=turn_id), "invalid_message", turn_id)

    def test_turn_id_longer_than_64(self) -> None:
        """A turn_id of 65 characters is invalid_message."""
        self.assertRefused(frame(type="cancel", turn_id="x" * 65), "invalid_message", "x" * 65)

    def test_non_string_turn_id(self) -> None:
        """A turn_id that is not a string is invalid_message, and not echoed."""
        for turn_id in (5, ["t-1"], True):
            with self.subTest(turn_id=turn_id):
                self.assertRefused(frame(type="cancel", turn_id=turn_id), "invalid_message")

    def test_extra_fields(self) -> None:
        """Fields the protocol does not define are invalid_message, for every type."""
        self.assertRefused(frame(type="user_message", content="hi", extra=1), "invalid_message")
        self.assertRefused(frame(type="cancel", reason="x"), "invalid_message")
        self.assertRefused(frame(type="ping", data={}), "invalid_message")

    def test_mentioned_documents_must_be_a_list(self) -> None:
        """mentioned_documents that is not a list is invalid_message."""
        self.assertRefused(frame(type="user_message", content="hi", mentioned_documents="doc"), "invalid_message")


class UnknownTypeTests(ParseFrameTestCase):
    def test_unknown_type(self) -> None:
        """A string type the protocol does not know is unknown_type, whatever else the frame holds."""
        for type_ in ("pong", "snapshot", "USER_MESSAGE", "", "agent_completed"):
            with self.subTest(type=type_):
                self.assertRefused(frame(type=type_, anything=[1, 2]), "unknown_type")

    def test_long_unknown_type_is_cut_in_the_message(self) -> None:
        """The error message quotes at most the start of a long unknown type."""
        error = self.assertRefused(frame(type="z" * 5000), "unknown_type")
        self.assertLess(len(error.message), 200)


class TurnIdEchoTests(ParseFrameTestCase):
    def test_turn_id_is_echoed_in_errors_of_frames_that_had_one(self) -> None:
        """invalid_message and unknown_type errors carry the frame's turn_id."""
        self.assertRefused(frame(type="user_message", content=" ", turn_id="t-7"), "invalid_message", "t-7")
        self.assertRefused(frame(type="user_message", content=5, turn_id="t-7"), "invalid_message", "t-7")
        self.assertRefused(frame(type="user_message", content="hi", turn_id="t-7", x=1), "invalid_message", "t-7")
        self.assertRefused(frame(type="ping", turn_id="t-7"), "invalid_message", "t-7")
        self.assertRefused(frame(turn_id="t-7"), "invalid_message", "t-7")
        self.assertRefused(frame(type="resume", turn_id="t-7"), "unknown_type", "t-7")

    def test_no_turn_id_when_the_frame_had_none(self) -> None:
        """Errors of frames without a turn_id carry none."""
        self.assertRefused(frame(type="user_message", content=" "), "invalid_message", None)
        self.assertRefused(frame(type="resume"), "unknown_type", None)
