"""Safe filter expressions such as "width >= 4 * depth and depth <= 8", without eval.

Parsed with `ast` and walked over a whitelist: numbers, the caller's variable names, + - * / **,
comparisons, and/or/not. Anything else is rejected with the offending piece named. Arithmetic is
done in floats: every result must be finite, `**` takes exponents of magnitude at most
`MAX_EXPONENT`, and the size of an expression is bounded, so no filter can raise anything but a
one-line ValueError, run for long, or exhaust memory.
"""

from __future__ import annotations

import ast
import math
import operator
import sys
from collections.abc import Callable, Iterable

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne}
MAX_CHARS = 1000  # longer text is refused before it is parsed
MAX_NODES = 200  # numbers, names and operations
MAX_DEPTH = 32  # nesting of operations
MAX_EXPONENT = 64  # |b| in a ** b


class _Arithmetic(ValueError):
    """An arithmetic failure inside a filter, named without the expression (added by the caller)."""


def compile_filter(text: str, names: Iterable[str]) -> Callable[[dict], bool]:
    """Parse `text` once; the result maps a record (name -> number) to True/False."""
    allowed = set(names)
    label = _label(text)
    if len(text) > MAX_CHARS:
        raise ValueError(f"filter {label}: too long ({len(text)} characters, at most "
                         f"{MAX_CHARS})")
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"cannot parse filter {label}") from None
    _check_size(tree, label)
    _check(tree, label, allowed)
    _fold_constants(tree, label)

    def test(record: dict) -> bool:
        try:
            return bool(_eval(tree, record))
        except _Arithmetic as e:
            at = ", ".join(f"{k}={record[k]}" for k in sorted(allowed) if k in record)
            raise ValueError(f"filter {label}: {e} at {at}") from None

    return test


def _label(text: str) -> str:
    """The expression as quoted in messages, shortened so that a message stays one line."""
    text = " ".join(text.split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _check_size(tree: ast.AST, label: str) -> None:
    """Count and depth without recursion, so that a huge expression cannot overflow the stack."""
    count, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ValueError(f"filter {label}: too long (more than {MAX_NODES} numbers, names "
                             "and operations)")
        if depth > MAX_DEPTH:
            raise ValueError(f"filter {label}: nested too deeply (more than {MAX_DEPTH} levels)")
        stack.extend((c, depth + 1) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr))


def _check(node: ast.AST, label: str, allowed: set[str]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ValueError(f"filter {label}: only numbers are allowed, got {node.value!r}")
        try:
            finite = math.isfinite(float(node.value))
        except OverflowError:
            finite = False
        if not finite:
            raise ValueError(f"filter {label}: {ast.unparse(node)[:20]} is not a finite number")
    elif isinstance(node, ast.Name):
        if node.id not in allowed:
            raise ValueError(f"filter {label}: unknown name {node.id!r} "
                             f"(known: {', '.join(sorted(allowed))})")
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check(node.left, label, allowed)
        _check(node.right, label, allowed)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _check(node.operand, label, allowed)
    elif isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
        for child in [node.left, *node.comparators]:
            _check(child, label, allowed)
    elif isinstance(node, ast.BoolOp):
        for child in node.values:
            _check(child, label, allowed)
    else:
        raise ValueError(f"filter {label}: {ast.unparse(node)!r} is not allowed "
                         "(use numbers, names, + - * / **, comparisons, and/or/not)")


def _fold_constants(tree: ast.AST, label: str) -> None:
    """Evaluate every part without names now: its errors (a huge exponent) show at parse time."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr) or not _constant(node):
            continue
        try:
            _eval(node, {})
        except _Arithmetic as e:
            raise ValueError(f"filter {label}: {e}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and _constant(node.right):
            b = _eval(node.right, {})
            if abs(b) > MAX_EXPONENT:
                raise ValueError(f"filter {label}: exponent {b:g} is beyond ±{MAX_EXPONENT}")


def _constant(node: ast.AST) -> bool:
    return not any(isinstance(n, ast.Name) for n in ast.walk(node))


def _arith(op: type, left, right) -> float:
    """One operation in floats, refused unless its result is a finite real number."""
    a, b = float(left), float(right)
    if op is ast.Pow:
        if abs(b) > MAX_EXPONENT:
            raise _Arithmetic(f"exponent {b:g} is beyond ±{MAX_EXPONENT}")
        if a < 0 and not b.is_integer():
            raise _Arithmetic(f"a negative number to a fractional power (({a:g}) ** {b:g})")
    try:
        out = _BINOPS[op](a, b)
    except ZeroDivisionError:
        raise _Arithmetic("division by zero") from None
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise _Arithmetic(f"a result too large (beyond ±{sys.float_info.max:.3g})")
    return out


def _eval(node: ast.AST, rec: dict):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return rec[node.id]
    if isinstance(node, ast.BinOp):
        return _arith(type(node.op), _eval(node.left, rec), _eval(node.right, rec))
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
