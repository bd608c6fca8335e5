"""Safe filter expressions such as "width >= 4 * depth and depth <= 8", without eval.

Parsed with `ast` and walked over a whitelist: numbers, the caller's variable names, + - * / **,
comparisons, and/or/not. Anything else is rejected with the offending piece named.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne}


def compile_filter(text: str, names: Iterable[str]) -> Callable[[dict], bool]:
    """Parse `text` once; the result maps a record (name -> number) to True/False."""
    allowed = set(names)
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ValueError(f"cannot parse filter {text!r}") from None
    _check(tree, text, allowed)
    return lambda record: bool(_eval(tree, record))


def _check(node: ast.AST, text: str, allowed: set[str]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ValueError(f"filter {text!r}: only numbers are allowed, got {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id not in allowed:
            raise ValueError(f"filter {text!r}: unknown name {node.id!r} "
                             f"(known: {', '.join(sorted(allowed))})")
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check(node.left, text, allowed)
        _check(node.right, text, allowed)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _check(node.operand, text, allowed)
    elif isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
        for child in [node.left, *node.comparators]:
            _check(child, text, allowed)
    elif isinstance(node, ast.BoolOp):
        for child in node.values:
            _check(child, text, allowed)
    else:
        raise ValueError(f"filter {text!r}: {ast.unparse(node)!r} is not allowed "
                         "(use numbers, names, + - * / **, comparisons, and/or/not)")


def _eval(node: ast.AST, rec: dict):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return rec[node.id]
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, rec), _eval(node.right, rec))
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, rec)
        return -v if isinstance(node.op, ast.USub) else (+v if isinstance(node.op, ast.UAdd)
                                                         else not v)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, rec)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, rec)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        vals = (_eval(v, rec) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    raise AssertionError(f"unchecked node {node!r}")
