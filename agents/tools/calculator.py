"""Arithmetic on + - * / ** % and parentheses, by walking the AST (never eval).

Input size, number size and exponents are bounded so that no expression can
take long or use much memory.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from .base import Tool, ToolError

MAX_EXPRESSION_CHARS = 200
MAX_NODES = 100
MAX_ABS_VALUE = 1e100
MAX_EXPONENT = 100

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate(expression: str) -> int | float:
    """Compute an arithmetic expression; raise ToolError when it cannot be computed."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("expression must be non-empty text")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError("expression too complex")
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent larger than {MAX_EXPONENT}")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except (OverflowError, ValueError) as exc:
            raise ToolError(f"cannot compute: {exc}") from None
    raise ToolError("only numbers, + - * / // % ** and parentheses are allowed")


def _bounded(value: int | float | complex) -> int | float:
    if isinstance(value, complex) or abs(value) > MAX_ABS_VALUE:
        raise ToolError("result out of range")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def run(arguments: dict) -> dict:
    expression = arguments.get("expression") if isinstance(arguments, dict) else None
    return {"expression": expression, "result": evaluate(expression if isinstance(expression, str) else "")}


calculator = Tool(
    name="calculator",
    description="Evaluate an arithmetic expression with + - * / // % ** and parentheses.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "for example (2 + 3) * 4"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    run=run,
)
