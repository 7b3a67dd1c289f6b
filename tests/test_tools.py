"""The tools agents call: a safe arithmetic calculator and a UTC clock (agents.tools)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from unittest import mock

from django.test import SimpleTestCase

from agents.providers.base import ToolSpec
from agents.tools import TOOLS, ToolError
from agents.tools.calculator import MAX_EXPRESSION_CHARS, MAX_NODES, evaluate

ALLOWED_ONLY = "only numbers"


class CalculatorResultTests(SimpleTestCase):
    def calc(self, expression: str):
        return TOOLS["calculator"].run({"expression": expression})

    def test_precedence(self) -> None:
        """* and / bind tighter than + and -; ** tighter than unary minus and right-associative."""
        self.assertEqual(evaluate("2 + 3 * 4"), 14)
        self.assertEqual(evaluate("10 - 6 / 3"), 8)
        self.assertEqual(evaluate("2 ** 3 ** 2"), 512)
        self.assertEqual(evaluate("-2 ** 2"), -4)
        self.assertEqual(evaluate("7 % 4 * 2"), 6)

    def test_parentheses(self) -> None:
        """Parentheses override precedence, also nested."""
        self.assertEqual(evaluate("(2 + 3) * 4"), 20)
        self.assertEqual(evaluate("((1 + 2) * (3 + 4)) / 7"), 3)

    def test_floats(self) -> None:
        """Floats compute as floats; an integral float result is given as an int."""
        self.assertAlmostEqual(evaluate("0.1 + 0.2"), 0.3)
        self.assertEqual(evaluate("7 / 2"), 3.5)
        self.assertEqual(evaluate("1.5 * 2"), 3)
        self.assertIsInstance(evaluate("1.5 * 2"), int)
        self.assertEqual(evaluate("2 ** -2"), 0.25)
        self.assertEqual(evaluate("7 // 2"), 3)

    def test_unary_minus_and_plus(self) -> None:
        """Unary minus and plus apply to numbers and to parenthesized expressions."""
        self.assertEqual(evaluate("-3 + 5"), 2)
        self.assertEqual(evaluate("-(2 + 3)"), -5)
        self.assertEqual(evaluate("--4"), 4)
        self.assertEqual(evaluate("+4 - -1"), 5)

    def test_bounded_power(self) -> None:
        """Powers up to the exponent bound compute; a result out of range is refused."""
        self.assertEqual(evaluate("2 ** 10"), 1024)
        self.assertEqual(evaluate("10 ** 100"), 10**100)
        with self.assertRaisesRegex(ToolError, "out of range"):
            evaluate("99 ** 100")
        with self.assertRaisesRegex(ToolError, "out of range"):
            evaluate("(10 ** 100) ** 100")

    def test_surrounding_whitespace(self) -> None:
        """Spaces and newlines around the expression are ignored."""
        self.assertEqual(evaluate("  1 + 1\n"), 2)

    def test_run_returns_expression_and_result(self) -> None:
        """The tool's output holds the expression and its result, and is JSON."""
        output = self.calc("(2 + 3) * 4")
        self.assertEqual(output, {"expression": "(2 + 3) * 4", "result": 20})
        self.assertEqual(json.loads(json.dumps(output)), output)


class CalculatorRefusalTests(SimpleTestCase):
    def assertRefused(self, expression, pattern: str = ALLOWED_ONLY) -> None:
        with self.assertRaisesRegex(ToolError, pattern):
            TOOLS["calculator"].run({"expression": expression})

    def test_never_calls_eval(self) -> None:
        """Neither builtins.eval nor exec is used, for valid or hostile input."""
        with (
            mock.patch("builtins.eval", side_effect=AssertionError("eval called")),
            mock.patch("builtins.exec", side_effect=AssertionError("exec called")),
        ):
            self.assertEqual(evaluate("(2 + 3) * 4"), 20)
            self.assertRefused("__import__('os').system('true')")

    def test_names_are_refused(self) -> None:
        """Names, even well-known ones, are refused."""
        self.assertRefused("x + 1")
        self.assertRefused("pi * 2")
        self.assertRefused("True + 1")

    def test_attribute_access_is_refused(self) -> None:
        """Attribute access on numbers is refused."""
        self.assertRefused("(1).real")
        self.assertRefused("(1).__class__.__bases__")

    def test_calls_are_refused(self) -> None:
        """Function calls, including __import__('os'), are refused."""
        self.assertRefused("abs(-1)")
        self.assertRefused("__import__('os')")
        self.assertRefused("(lambda: 1)()")

    def test_other_syntax_is_refused(self) -> None:
        """Strings, lists, comparisons, boolean and bitwise operators and complex numbers are refused."""
        for expression in ("'a' * 3", "[1, 2]", "1 < 2", "not 1", "~1", "1 | 2", "1 if 1 else 2", "1j"):
            with self.subTest(expression=expression):
                self.assertRefused(expression)

    def test_statements_are_refused(self) -> None:
        """Text that is not an expression is refused as not arithmetic."""
        self.assertRefused("import os", "not an arithmetic expression")
        self.assertRefused("1; 2", "not an arithmetic expression")
        self.assertRefused("1 +", "not an arithmetic expression")

    def test_huge_exponent_is_refused(self) -> None:
        """An exponent above the bound is refused before computing."""
        self.assertRefused("2 ** 101", "exponent larger than 100")
        self.assertRefused("9 ** 9 ** 9", "exponent larger than 100")
        self.assertRefused("2 ** -101", "exponent larger than 100")

    def test_huge_numbers_are_refused(self) -> None:
        """Numbers beyond the range, literal or computed, are refused."""
        self.assertRefused("9" * 150, "out of range")
        self.assertRefused("1e999", "out of range")
        self.assertRefused("1e308 * 10", "out of range")
        self.assertRefused("1e100 ** 2", "out of range|cannot compute")

    def test_too_long_input_is_refused(self) -> None:
        """Input longer than the character bound is refused without parsing."""
        expression = "1+" * (MAX_EXPRESSION_CHARS // 2) + "1"
        self.assertGreater(len(expression), MAX_EXPRESSION_CHARS)
        with mock.patch("agents.tools.calculator.ast.parse", side_effect=AssertionError("parsed")):
            self.assertRefused(expression, f"longer than {MAX_EXPRESSION_CHARS} characters")

    def test_too_many_nodes_are_refused(self) -> None:
        """A short expression with more syntax nodes than the bound is refused as too complex."""
        expression = "+".join(["1"] * 60)
        self.assertLessEqual(len(expression), MAX_EXPRESSION_CHARS)
        self.assertRefused(expression, "too complex")
        self.assertRefused("-" * 150 + "1", "too complex")
        self.assertGreater(MAX_NODES, 0)

    def test_division_by_zero(self) -> None:
        """Division, floor division, modulo by zero and 0 ** -1 are a ToolError saying division by zero."""
        for expression in ("1/0", "1 // 0", "5 % 0", "0 ** -1", "1 / (2 - 2)"):
            with self.subTest(expression=expression):
                self.assertRefused(expression, "division by zero")

    def test_complex_result_is_refused(self) -> None:
        """A power that would give a complex number is refused."""
        self.assertRefused("(-8) ** 0.5", "out of range|cannot compute")

    def test_missing_or_empty_expression(self) -> None:
        """A missing, empty, blank or non-text expression is a ToolError."""
        calculator = TOOLS["calculator"]
        for arguments in ({}, {"expression": ""}, {"expression": "   "}, {"expression": 12}, "1+1"):
            with self.subTest(arguments=arguments):
                with self.assertRaisesRegex(ToolError, "non-empty text"):
                    calculator.run(arguments)


class ToolSpecTests(SimpleTestCase):
    def test_tools_are_registered_by_name(self) -> None:
        """TOOLS maps each tool's own name to it: calculator and clock."""
        self.assertEqual(set(TOOLS), {"calculator", "clock"})
        for name, tool in TOOLS.items():
            self.assertEqual(tool.name, name)

    def test_each_tool_has_an_object_json_schema(self) -> None:
        """Each tool's parameters are a JSON-serializable schema of type object whose required keys are properties."""
        for tool in TOOLS.values():
            with self.subTest(tool=tool.name):
                schema = tool.parameters
                self.assertEqual(schema["type"], "object")
                self.assertIsInstance(schema["properties"], dict)
                for key in schema.get("required", []):
                    self.assertIn(key, schema["properties"])
                self.assertEqual(json.loads(json.dumps(schema)), schema)

    def test_calculator_schema_requires_a_string_expression(self) -> None:
        """The calculator takes exactly one required string, `expression`."""
        schema = TOOLS["calculator"].parameters
        self.assertEqual(schema["properties"]["expression"]["type"], "string")
        self.assertEqual(schema["required"], ["expression"])
        self.assertIs(schema.get("additionalProperties"), False)

    def test_spec_is_usable_as_an_openai_tool(self) -> None:
        """tool.spec gives name, description and parameters for an OpenAI `function` tool entry."""
        for tool in TOOLS.values():
            with self.subTest(tool=tool.name):
                spec = tool.spec
                self.assertIsInstance(spec, ToolSpec)
                openai_tool = {
                    "type": "function",
                    "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
                }
                self.assertRegex(spec.name, r"^[a-zA-Z0-9_-]{1,64}$")
                self.assertTrue(spec.description.strip())
                json.dumps(openai_tool)


class ClockTests(SimpleTestCase):
    def test_clock_returns_iso_utc_time(self) -> None:
        """The clock gives the current time as ISO 8601 in UTC (offset +00:00) and as Unix seconds."""
        before = datetime.now(UTC).replace(microsecond=0)
        output = TOOLS["clock"].run({})
        after = datetime.now(UTC)
        self.assertRegex(output["utc"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
        parsed = datetime.fromisoformat(output["utc"])
        self.assertEqual(parsed.utcoffset(), timedelta(0))
        self.assertTrue(before <= parsed <= after, (before, parsed, after))
        self.assertEqual(output["unix"], int(parsed.timestamp()))
        self.assertEqual(json.loads(json.dumps(output)), output)

    def test_clock_ignores_arguments(self) -> None:
        """The clock takes no input: an empty object is all it needs."""
        self.assertEqual(TOOLS["clock"].parameters["properties"], {})
        self.assertTrue(re.match(r"\d{4}-", TOOLS["clock"].run({})["utc"]))
