"""docs/protocol.md names every frame type, event type, error code and close code that the code accepts or sends.

The names are collected from the code itself, so that a frame, event or code
added later is found without anyone listing it here: client frame types from
the union `web.frames` parses; from the source of `web`, `agents` and `chat`,
every wire `type` (a `"type": "..."` in a dict, or a string handed to a
function named `*frame`), every error code (a string passed as the `code`
parameter of any function or exception class defined there, or a
`"code": "..."` in a dict) and every close code (a `CLOSE_*` constant, or a
number given to `close`); a module-level constant counts as its value. The
page must name each one in backticks.
"""

from __future__ import annotations

import ast
import functools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase

from web import frames

ROOT = Path(settings.BASE_DIR)
DOC = ROOT / "docs" / "protocol.md"
PACKAGES = ("web", "agents", "chat")
# Their dicts' "type" keys belong to the model APIs and JSON schemas, not to the socket.
NOT_WIRE_TYPES = ("agents/providers/", "agents/tools/")
# Channel-layer message types are dotted ("thread.event"); wire types are snake_case words.
WIRE_NAME = re.compile(r"^[a-z]+(_[a-z]+)*$")


@dataclass
class Found:
    """Names found in the code, each with the places (path:line) it comes from."""

    types: dict[str, set[str]] = field(default_factory=dict)
    codes: dict[str, set[str]] = field(default_factory=dict)
    close_codes: dict[str, set[str]] = field(default_factory=dict)

    @staticmethod
    def add(names: dict[str, set[str]], name: str, where: str) -> None:
        names.setdefault(name, set()).add(where)


def sources() -> list[tuple[str, str]]:
    """(path relative to the project, source) of every module of the packages that speak the protocol."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found.append((path.relative_to(ROOT).as_posix(), path.read_text()))
    return found


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def module_constants(tree: ast.Module) -> dict[str, object]:
    """The module's `NAME = <constant>` assignments, so that a code or type named by a constant is found too."""
    constants: dict[str, object] = {}
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if not isinstance(value, ast.Constant):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        constants.update((t.id, value.value) for t in targets if isinstance(t, ast.Name))
    return constants


def code_parameters(trees: list[tuple[str, ast.Module]]) -> dict[str, int]:
    """Every function, method or exception class with a parameter named `code`: its name -> the position of `code`."""
    positions = {}
    for _, tree in trees:
        for node in ast.walk(tree):
            owner = node
            if isinstance(node, ast.ClassDef):
                node = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
                if node is None:
                    continue
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
            if params and params[0] in ("self", "cls"):
                params = params[1:]
            if "code" in params:
                positions[owner.name] = params.index("code")
    return positions


def _argument(node: ast.Call, position: int, keyword: str) -> list[ast.expr]:
    """The argument at `position` or named `keyword` of a call (none, one, or both when the call is wrong)."""
    return [*node.args[position : position + 1], *(k.value for k in node.keywords if k.arg == keyword)]


def _value(node: ast.AST | None, constants: dict[str, object]) -> object:
    """A literal's value, or that of the module constant a name refers to."""
    if isinstance(node, ast.Constant):
        return node.value
    return constants.get(node.id) if isinstance(node, ast.Name) else None


def _text(node: ast.AST | None, constants: dict[str, object]) -> str | None:
    found = _value(node, constants)
    return found if isinstance(found, str) else None


def collect(modules: list[tuple[str, str]]) -> Found:
    """The wire types, error codes and close codes the given modules send, with where each is."""
    trees = [(path, ast.parse(source, path)) for path, source in modules]
    takes_code = code_parameters(trees)
    shared = {name: value for _, tree in trees for name, value in module_constants(tree).items()}
    found = Found()
    for path, tree in trees:
        constants = shared | module_constants(tree)
        value = functools.partial(_value, constants=constants)
        text = functools.partial(_text, constants=constants)
        wire = not path.startswith(NOT_WIRE_TYPES)
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Dict):
                for key, item in zip(node.keys, node.values, strict=True):
                    name = text(item)
                    if name is not None and text(key) == "type" and wire and WIRE_NAME.match(name):
                        found.add(found.types, name, where)
                    if name is not None and text(key) == "code":
                        found.add(found.codes, name, where)
            elif isinstance(node, ast.Call):
                callee = _callee(node)
                if wire and callee.endswith("frame"):
                    for arg in (*node.args, *(k.value for k in node.keywords if k.arg in ("type", "type_"))):
                        name = text(arg)
                        if name is not None and WIRE_NAME.match(name):
                            found.add(found.types, name, where)
                if callee in takes_code:
                    for arg in _argument(node, takes_code[callee], "code"):
                        if text(arg) is not None:
                            found.add(found.codes, text(arg), where)
                if callee == "close":
                    for arg in _argument(node, 0, "code"):
                        if isinstance(value(arg), int):
                            found.add(found.close_codes, str(value(arg)), where)
            elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if any(n.startswith("CLOSE_") for n in names) and isinstance(node.value.value, int):
                    found.add(found.close_codes, str(node.value.value), where)
    return found


def client_frame_types() -> set[str]:
    """The `type` of every frame model in the union web.frames parses, and the types it knows by name."""
    union = typing.get_args(frames.ClientFrame)[0]
    models = typing.get_args(union) or (union,)
    literal = {value for model in models for value in typing.get_args(model.model_fields["type"].annotation)}
    return literal | set(frames.KNOWN_TYPES)


def documented() -> set[str]:
    """Every name the page writes in backticks."""
    return set(re.findall(r"`([^`\n]+)`", DOC.read_text()))


class ProtocolDocTests(SimpleTestCase):
    def assertDocumented(self, kind: str, names: dict[str, set[str]]) -> None:
        """Fail naming each of `names` (with where the code has it) that the page does not write in backticks."""
        missing = {name: places for name, places in names.items() if name not in documented()}
        if missing:
            lines = [f"  `{name}` ({', '.join(sorted(places))})" for name, places in sorted(missing.items())]
            self.fail(f"{kind} missing from docs/protocol.md:\n" + "\n".join(lines))

    def test_every_client_frame_type_is_documented(self):
        """Each frame type a client may send is described in docs/protocol.md."""
        self.assertDocumented("client frame types", {name: {"web/frames.py"} for name in client_frame_types()})

    def test_every_server_frame_and_event_type_is_documented(self):
        """Each frame or event type the server sends is described in docs/protocol.md."""
        self.assertDocumented("server frame and event types", collect(sources()).types)

    def test_every_error_code_is_documented(self):
        """Each error code of a socket refusal, an HTTP refusal or a failed turn is described in docs/protocol.md."""
        self.assertDocumented("error codes", collect(sources()).codes)

    def test_every_close_code_is_documented(self):
        """Each code the server closes a socket with is described in docs/protocol.md."""
        self.assertDocumented("close codes", collect(sources()).close_codes)


class CollectionTests(SimpleTestCase):
    def test_collection_finds_what_the_server_sends_today(self):
        """The scan of the code finds the frames, events and codes known to exist, so an empty scan cannot pass."""
        found = collect(sources())
        self.assertLessEqual({"user_message", "cancel", "ping"}, client_frame_types())
        events = {"snapshot", "user_message", "agent_started", "agent_thinking", "message_delta"}
        events |= {"tool_executing", "tool_completed", "agent_completed", "error", "pong"}
        self.assertLessEqual(events, set(found.types))
        codes = {"invalid_json", "message_too_large", "invalid_message", "unknown_type", "binary_not_supported"}
        codes |= {"rate_limited", "turn_not_found", "server_error", "not_authenticated", "invalid_title"}
        codes |= {"csrf_failed", "not_found", "interrupted", "step_limit", "provider_timeout"}
        self.assertLessEqual(codes, set(found.codes))
        self.assertLessEqual({"4401", "4404"}, set(found.close_codes))
        self.assertNotIn("thread.event", found.types)  # a channel-layer message, not a frame
        self.assertNotIn("object", found.types)  # a tool's JSON schema

    def test_names_added_in_new_code_are_collected(self):
        """A new refusal code, event type or close code in a module someone adds is found without listing it."""
        module = (
            "agents/versions.py",
            "from .intake import Refused\n"
            "CLOSE_GONE = 4410\n"
            "GONE = 'message_gone'\n"
            "async def regenerate(socket, publisher, found):\n"
            "    if not found:\n"
            "        raise Refused(GONE, 'No such message.')\n"
            "    await publisher.send(publisher._frame('agent_paused', {}))\n"
            "    await socket.close(code=4409)\n"
            "    return {'type': 'versions_changed', 'error': {'code': 'branch_lost'}}\n",
        )
        found = collect([*sources(), module])
        self.assertIn("agents/versions.py:6", found.codes["message_gone"])
        self.assertIn("agents/versions.py:9", found.codes["branch_lost"])
        self.assertIn("agents/versions.py:7", found.types["agent_paused"])
        self.assertIn("agents/versions.py:9", found.types["versions_changed"])
        self.assertEqual(found.close_codes["4410"], {"agents/versions.py:2"})
        self.assertEqual(found.close_codes["4409"], {"agents/versions.py:8"})
