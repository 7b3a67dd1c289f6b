"""Hypothesis profiles and strategies for hostile client input.

The `ci` profile (the default) runs 150 examples of each API body property
and 80 of the socket frame property (each frame opens sockets and may run a
turn): 230 in all, under a minute here. `HYPOTHESIS_PROFILE=thorough` runs
2000 and 1000.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("thorough", parent=settings.get_profile("ci"), max_examples=2000)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
FRAME_EXAMPLES = 1000 if PROFILE == "thorough" else 80

# Every code point a JSON escape can produce: lone surrogates, NUL and the other controls included.
HOSTILE_CHARS = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),  # lone surrogates
    st.characters(categories=["Cc"]),  # NUL and the other controls
    st.sampled_from(["\x00", "\ud800", "\udfff", "\x01", "\x1b", "\x7f", "\u2028", "\ufeff", "\U0010ffff"]),
)
HOSTILE_TEXT = st.text(HOSTILE_CHARS, max_size=40)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HOSTILE_TEXT, children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(["type", "content", "turn_id", "mentioned_documents", "title", "extra"])
FRAME_TYPES = st.sampled_from(["user_message", "cancel", "ping", "regenerate", ""]) | HOSTILE_TEXT
DOCUMENTS = st.lists(
    st.fixed_dictionaries({"id": JSON_VALUES, "title": JSON_VALUES, "document_type": JSON_VALUES}) | JSON_VALUES,
    max_size=3,
)


@st.composite
def client_frames(draw: st.DrawFn) -> str:
    """A text frame a hostile client could send: mostly JSON objects shaped like the contract's frames."""
    kind = draw(st.sampled_from(["frame", "frame", "frame", "json", "text"]))
    if kind == "text":
        # Raw text must itself be valid UTF-8 on the wire: no surrogates here, only through JSON escapes.
        return draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=60))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES))
    frame = {"type": draw(FRAME_TYPES)}
    optional = {
        "content": st.one_of(HOSTILE_TEXT, JSON_VALUES, st.just("what is 2+3")),
        "turn_id": st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z"), HOSTILE_TEXT, JSON_VALUES),
        "mentioned_documents": DOCUMENTS,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            frame[name] = draw(strategy)
    if draw(st.integers(0, 9)) == 0:
        frame[draw(HOSTILE_TEXT)] = draw(JSON_VALUES)
    return json.dumps(frame, ensure_ascii=True)


@st.composite
def api_bodies(draw: st.DrawFn) -> bytes:
    """A request body for POST / PATCH of a thread: raw bytes, any JSON, or a JSON object with a hostile title."""
    kind = draw(st.sampled_from(["object", "object", "json", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(900, 60_000))
        return (draw(st.sampled_from(['{"a":', "["])) * depth).encode()
    body = draw(st.dictionaries(st.sampled_from(["title", "x", "\u0000"]) | HOSTILE_TEXT, JSON_VALUES, max_size=3))
    if draw(st.booleans()):
        body["title"] = draw(HOSTILE_TEXT)
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
