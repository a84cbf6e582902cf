"""A TraceQL subset: spanset filters with attribute and intrinsic comparisons, && / || and parentheses.

Supported: ``{ }`` spansets joined by ``&&`` / ``||``; inside, comparisons of ``span.x``,
``resource.x``, ``.x`` (span first, then resource) or the intrinsics ``name``, ``status``,
``statusMessage``, ``kind``, ``duration``, ``rootName``, ``rootServiceName``, ``traceDuration``
against string, integer, float, duration, boolean, status and kind literals, with ``= != =~ !~ >
>= < <=``, combined by ``&&`` / ``||`` and parentheses. Pipelines, aggregates and structural
operators are refused with a clear error. Regular expressions are fully anchored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from amtp_obs.otlp import any_value


class TraceQLError(ValueError):
    """A query we cannot parse or run; the API answers 400 ``invalid TraceQL query: <message>``."""


# Intrinsics and their types.
INTRINSICS: dict[str, str] = {
    "duration": "duration",
    "kind": "kind",
    "name": "string",
    "rootName": "string",
    "rootServiceName": "string",
    "status": "status",
    "statusMessage": "string",
    "traceDuration": "duration",
}
STATUS_VALUES = {
    "unset": Status.STATUS_CODE_UNSET,
    "ok": Status.STATUS_CODE_OK,
    "error": Status.STATUS_CODE_ERROR,
}
KIND_VALUES = {
    "unspecified": Span.SPAN_KIND_UNSPECIFIED,
    "internal": Span.SPAN_KIND_INTERNAL,
    "server": Span.SPAN_KIND_SERVER,
    "client": Span.SPAN_KIND_CLIENT,
    "producer": Span.SPAN_KIND_PRODUCER,
    "consumer": Span.SPAN_KIND_CONSUMER,
}
STATUS_NAMES = {v: k for k, v in STATUS_VALUES.items()}
KIND_NAMES = {v: k for k, v in KIND_VALUES.items()}

_DUR_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:ns|us|µs|ms|s|m|h)?(?![A-Za-z0-9_.]))
  | (?P<op>&&|\|\||=~|!~|!=|>=|<=|=|>|<|\{|\}|\(|\)|\||!)
  | (?P<ident>\.?[A-Za-z_][A-Za-z0-9_.\-/]*)
    """,
    re.VERBOSE,
)
COMPARISON_OPS = ("=", "!=", "=~", "!~", ">", ">=", "<", "<=")
_FLIP = {"=": "=", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}


@dataclass(frozen=True)
class Attr:
    scope: str  # span | resource | unscoped | intrinsic
    name: str

    @property
    def type(self) -> str | None:
        return INTRINSICS[self.name] if self.scope == "intrinsic" else None

    def __str__(self) -> str:
        if self.scope == "intrinsic":
            return self.name
        return ("." if self.scope == "unscoped" else f"{self.scope}.") + self.name


@dataclass(frozen=True)
class Lit:
    type: str  # string | int | float | duration | bool | status | kind | nil
    value: Any


@dataclass(frozen=True)
class Cond:
    attr: Attr
    op: str
    lit: Lit


@dataclass(frozen=True)
class BoolOp:
    op: str  # && | ||
    left: Any
    right: Any


@dataclass(frozen=True)
class Spanset:
    cond: Any  # Cond | BoolOp | None (match all)


@dataclass(frozen=True)
class SpansetOp:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Query:
    root: Any

    @property
    def attributes(self) -> list[Attr]:
        """Attributes the query reads, in order: the search API returns their values per span."""
        out: list[Attr] = []

        def walk(n: Any) -> None:
            if isinstance(n, (SpansetOp, BoolOp)):
                walk(n.left)
                walk(n.right)
            elif isinstance(n, Spanset) and n.cond is not None:
                walk(n.cond)
            elif isinstance(n, Cond) and n.attr not in out:
                out.append(n.attr)

        walk(self.root)
        return out


def _tokens(q: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if m is None:
            raise TraceQLError(f"unexpected character {q[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group(), pos + 1))
        pos = m.end()
    return out


def _unquote(s: str) -> str:
    if s.startswith("`"):
        return s[1:-1]
    body, out, i = s[1:-1], [], 0
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _number(text: str) -> Lit:
    m = re.fullmatch(r"(-?(?:\d+\.\d*|\.\d+|\d+))(ns|us|µs|ms|s|m|h)?", text)
    assert m is not None
    num, unit = m.group(1), m.group(2)
    if unit:
        return Lit("duration", int(float(num) * _DUR_UNITS[unit]))
    if "." in num:
        return Lit("float", float(num))
    return Lit("int", int(num))


class _Parser:
    def __init__(self, q: str) -> None:
        self.toks = _tokens(q)
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise TraceQLError("unexpected end of query")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok[1] != text:
            raise TraceQLError(f"expected {text!r} at position {tok[2]}, found {tok[1]!r}")

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == text

    # spanset level
    def query(self) -> Query:
        if not self.toks:
            raise TraceQLError("empty query")
        root = self.spanset_or()
        tok = self.peek()
        if tok is not None:
            if tok[1] == "|":
                raise TraceQLError(
                    f"pipelines (| ...) are not supported by the embedded trace store (position {tok[2]})"
                )
            if tok[1] in (">", ">>", "<", "~"):
                raise TraceQLError(f"structural operators are not supported (position {tok[2]})")
            raise TraceQLError(f"unexpected {tok[1]!r} at position {tok[2]}")
        return Query(root)

    def spanset_or(self) -> Any:
        left = self.spanset_and()
        while self.at("||"):
            self.take()
            left = SpansetOp("||", left, self.spanset_and())
        return left

    def spanset_and(self) -> Any:
        left = self.spanset_primary()
        while self.at("&&"):
            self.take()
            left = SpansetOp("&&", left, self.spanset_primary())
        return left

    def spanset_primary(self) -> Any:
        tok = self.take()
        if tok[1] == "(":
            inner = self.spanset_or()
            self.expect(")")
            return inner
        if tok[1] != "{":
            raise TraceQLError(f"expected '{{' at position {tok[2]}, found {tok[1]!r}")
        if self.at("}"):
            self.take()
            return Spanset(None)
        cond = self.field_or()
        self.expect("}")
        return Spanset(cond)

    # field level
    def field_or(self) -> Any:
        left = self.field_and()
        while self.at("||"):
            self.take()
            left = BoolOp("||", left, self.field_and())
        return left

    def field_and(self) -> Any:
        left = self.field_primary()
        while self.at("&&"):
            self.take()
            left = BoolOp("&&", left, self.field_primary())
        return left

    def field_primary(self) -> Any:
        if self.at("("):
            self.take()
            inner = self.field_or()
            self.expect(")")
            return inner
        if self.at("!"):
            tok = self.take()
            raise TraceQLError(f"negation (!) is not supported at position {tok[2]}; use != or !~")
        left = self.operand()
        tok = self.take()
        if tok[1] not in COMPARISON_OPS:
            raise TraceQLError(f"expected a comparison operator at position {tok[2]}, found {tok[1]!r}")
        op = tok[1]
        right = self.operand()
        if isinstance(left, Lit) and isinstance(right, Attr):
            if op not in _FLIP:
                raise TraceQLError(f"{op} needs the attribute on the left")
            left, right, op = right, left, _FLIP[op]
        if not isinstance(left, Attr) or not isinstance(right, Lit):
            raise TraceQLError(f"comparison at position {tok[2]} must compare an attribute with a value")
        return _check(Cond(left, op, right))

    def operand(self) -> Attr | Lit:
        kind, text, pos = self.take()
        if kind == "str":
            return Lit("string", _unquote(text))
        if kind == "num":
            return _number(text)
        if kind == "ident":
            if text.startswith("."):
                return Attr("unscoped", text[1:])
            for scope in ("span", "resource"):
                if text.startswith(scope + "."):
                    name = text[len(scope) + 1 :]
                    if not name:
                        raise TraceQLError(f"missing attribute name after {scope}. at position {pos}")
                    return Attr(scope, name)
            if text.startswith(("parent.", "event.", "link.", "instrumentation.")):
                raise TraceQLError(f"scope of {text!r} is not supported")
            if text in INTRINSICS:
                return Attr("intrinsic", text)
            if text in STATUS_VALUES:
                return Lit("status", STATUS_VALUES[text])
            if text in KIND_VALUES:
                return Lit("kind", KIND_VALUES[text])
            if text in ("true", "false"):
                return Lit("bool", text == "true")
            if text == "nil":
                return Lit("nil", None)
            raise TraceQLError(f"unknown identifier {text!r} at position {pos} (attributes need span., resource. or .)")
        raise TraceQLError(f"expected an attribute or a value at position {pos}, found {text!r}")


def _check(c: Cond) -> Cond:
    """Reject comparisons Tempo refuses at parse time: mismatched intrinsic types, regex on non-strings."""
    t, lt, op = c.attr.type, c.lit.type, c.op
    if op in ("=~", "!~"):
        if lt != "string":
            raise TraceQLError(f"{op} needs a string regular expression, got a {lt}")
        if t not in (None, "string"):
            raise TraceQLError(f"{op} cannot be applied to {c.attr} ({t})")
        try:
            re.compile(c.lit.value)
        except re.error as exc:
            raise TraceQLError(f"invalid regular expression {c.lit.value!r}: {exc}") from None
        return c
    if lt == "nil":
        if op not in ("=", "!="):
            raise TraceQLError("nil can only be compared with = or !=")
        return c
    if t is not None:
        compatible = {
            "duration": ("duration",),
            "string": ("string",),
            "status": ("status",),
            "kind": ("kind",),
        }[t]
        if lt not in compatible:
            raise TraceQLError(f"binary operations must operate on the same type: {c.attr} is {t}, value is {lt}")
    if lt in ("status", "kind", "bool") and op not in ("=", "!="):
        raise TraceQLError(f"{lt} values can only be compared with = or !=")
    return c


def parse(q: str) -> Query:
    """Parse a TraceQL query, raising :class:`TraceQLError` with a message fit for a 400."""
    return _Parser(q).query()


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


class SpanView:
    """One span with its resource attributes; span attributes are decoded only when asked."""

    __slots__ = ("_attrs", "resource", "span", "trace")

    def __init__(self, span: Span, resource: dict[str, Any], trace: TraceContext) -> None:
        self.span = span
        self.resource = resource
        self.trace = trace
        self._attrs: dict[str, Any] | None = None

    @property
    def attrs(self) -> dict[str, Any]:
        if self._attrs is None:
            self._attrs = {kv.key: any_value(kv.value) for kv in self.span.attributes}
        return self._attrs

    @property
    def duration(self) -> int:
        return max(0, self.span.end_time_unix_nano - self.span.start_time_unix_nano)


@dataclass
class TraceContext:
    root_name: str | None
    root_service: str | None
    duration: int


_MISSING = object()


def lookup(view: SpanView, attr: Attr) -> Any:
    if attr.scope == "span":
        return view.attrs.get(attr.name, _MISSING)
    if attr.scope == "resource":
        return view.resource.get(attr.name, _MISSING)
    if attr.scope == "unscoped":
        v = view.attrs.get(attr.name, _MISSING)
        return view.resource.get(attr.name, _MISSING) if v is _MISSING else v
    s = view.span
    match attr.name:
        case "name":
            return s.name
        case "status":
            return s.status.code
        case "statusMessage":
            return s.status.message
        case "kind":
            return s.kind
        case "duration":
            return view.duration
        case "rootName":
            return view.trace.root_name if view.trace.root_name is not None else _MISSING
        case "rootServiceName":
            return view.trace.root_service if view.trace.root_service is not None else _MISSING
        case "traceDuration":
            return view.trace.duration
    return _MISSING


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _compare(value: Any, c: Cond) -> bool:
    lit = c.lit
    if lit.type == "nil":
        return (value is _MISSING) == (c.op == "=")
    if value is _MISSING or value is None:
        return False
    if c.op in ("=~", "!~"):
        if not isinstance(value, str):
            return False
        hit = re.fullmatch(lit.value, value) is not None
        return hit if c.op == "=~" else not hit
    lt = lit.type
    if lt == "string":
        ok = isinstance(value, str)
    elif lt in ("int", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif lt == "bool":
        ok = isinstance(value, bool)
    elif lt == "duration":
        ok = c.attr.scope == "intrinsic" or (isinstance(value, (int, float)) and not isinstance(value, bool))
    else:  # status / kind: only intrinsics carry them
        ok = c.attr.scope == "intrinsic"
    return ok and _CMP[c.op](value, lit.value)


def eval_cond(cond: Any, view: SpanView) -> bool:
    if cond is None:
        return True
    if isinstance(cond, BoolOp):
        if cond.op == "&&":
            return eval_cond(cond.left, view) and eval_cond(cond.right, view)
        return eval_cond(cond.left, view) or eval_cond(cond.right, view)
    return _compare(lookup(view, cond.attr), cond)


def evaluate(query: Query, spans: list[SpanView]) -> list[SpanView]:
    """Spans matched by the query in this trace; empty when the trace does not match."""

    def run(node: Any) -> list[SpanView]:
        if isinstance(node, Spanset):
            return [v for v in spans if eval_cond(node.cond, v)]
        left = run(node.left)
        if node.op == "&&":
            if not left:
                return []
            right = run(node.right)
            if not right:
                return []
        else:
            right = run(node.right)
        seen = {id(v) for v in left}
        return left + [v for v in right if id(v) not in seen]

    return run(query.root)
