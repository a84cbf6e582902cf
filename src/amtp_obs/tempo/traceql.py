"""TraceQL as Tempo 2.4.1 runs it for search: spanset filters, structural operators and pipelines.

Supported (grammar of pkg/traceql/expr.y at v2.4.1): ``{ }`` spansets joined by ``&&`` / ``||`` and the
structural operators ``>`` ``<`` ``>>`` ``<<`` ``~`` and their negations ``!>`` ``!<`` ``!>>`` ``!<<``
``!~`` (all left-associative; the structural ones bind tighter than ``&&`` / ``||``, which bind
equally, as the grammar's ``%left`` lines say); pipelines ``| { ... }``, ``| select(...)``,
``| by(...)``, ``| coalesce()`` and scalar filters ``| count() > n`` / ``avg|min|max|sum(field) op
value``. Inside a spanset: comparisons of ``span.x``, ``resource.x``, ``.x`` (span first, then
resource) or the intrinsics ``name``, ``status``, ``statusMessage``, ``kind``, ``duration``,
``rootName``, ``rootServiceName``, ``traceDuration`` against string, integer, float, duration,
boolean, status and kind literals, with ``= != =~ !~ > >= < <=``, combined by ``&&`` / ``||`` and
parentheses. Not supported (a clear error): arithmetic in field expressions, ``parent.``-scoped
attributes, ``!`` negation, metrics queries (``| rate()``). Regular expressions are fully anchored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
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
  | (?P<op>!>>|!<<|!>|!<|>>|<<|&&|\|\||=~|!~|!=|>=|<=|=|>|<|~|\{|\}|\(|\)|\||!|,)
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


STRUCTURAL_OPS = (">", "<", ">>", "<<", "~", "!>", "!<", "!>>", "!<<", "!~")
"""Spanset relations of expr.y v2.4.1 (child, parent, descendant, ancestor, sibling and their negations)."""
AGGREGATES = ("count", "avg", "min", "max", "sum")
SCALAR_OPS = ("=", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Aggregate:
    op: str  # count | avg | min | max | sum
    attr: Attr | None

    def __str__(self) -> str:
        """The spanset attribute name Tempo gives the result (ast_stringer.go: ``count()``, ``avg(duration)``)."""
        return f"{self.op}({self.attr if self.attr is not None else ''})"


@dataclass(frozen=True)
class ScalarFilter:
    agg: Aggregate
    op: str
    lit: Lit


@dataclass(frozen=True)
class Select:
    attrs: tuple[Attr, ...]


@dataclass(frozen=True)
class GroupBy:
    attr: Attr

    def __str__(self) -> str:
        return f"by({self.attr})"


@dataclass(frozen=True)
class Coalesce:
    pass


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[Any, ...]  # spanset expressions, ScalarFilter, Select, GroupBy, Coalesce


@dataclass(frozen=True)
class Query:
    root: Any

    @property
    def attributes(self) -> list[Attr]:
        """Attributes the query reads or selects, in order: the search API returns their values per span."""
        out: list[Attr] = []

        def add(a: Attr | None) -> None:
            if a is not None and a not in out:
                out.append(a)

        def walk(n: Any) -> None:
            if isinstance(n, (SpansetOp, BoolOp)):
                walk(n.left)
                walk(n.right)
            elif isinstance(n, Spanset) and n.cond is not None:
                walk(n.cond)
            elif isinstance(n, Cond):
                add(n.attr)
            elif isinstance(n, Pipeline):
                for stage in n.stages:
                    walk(stage)
            elif isinstance(n, Select):
                for a in n.attrs:
                    add(a)
            elif isinstance(n, ScalarFilter):
                add(n.agg.attr)
            elif isinstance(n, GroupBy):
                add(n.attr)

        walk(self.root)
        return out

    @property
    def duration_outputs(self) -> set[str]:
        """Spanset attributes (``avg(duration)``, ``by(traceDuration)``) whose values are durations."""
        out: set[str] = set()

        def walk(n: Any) -> None:
            if isinstance(n, SpansetOp):
                walk(n.left)
                walk(n.right)
            elif isinstance(n, Pipeline):
                for stage in n.stages:
                    walk(stage)
            elif isinstance(n, ScalarFilter) and n.agg.attr is not None and n.agg.attr.type == "duration":
                out.add(str(n.agg))
            elif isinstance(n, GroupBy) and n.attr.type == "duration":
                out.add(str(n))

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

    # pipeline level
    def query(self) -> Query:
        if not self.toks:
            raise TraceQLError("empty query")
        root = self.pipeline_expr()
        tok = self.peek()
        if tok is not None:
            raise TraceQLError(f"unexpected {tok[1]!r} at position {tok[2]}")
        return Query(root)

    def pipeline_expr(self) -> Any:
        """spansetPipelineExpression: pipelines joined by && / || and the structural operators."""
        left = self.pipeline_rel()
        while self.at("&&") or self.at("||"):
            op = self.take()[1]
            left = SpansetOp(op, left, self.pipeline_rel())
        return left

    def pipeline_rel(self) -> Any:
        left = self.pipeline_primary()
        while (tok := self.peek()) is not None and tok[1] in STRUCTURAL_OPS:
            self.take()
            left = SpansetOp(tok[1], left, self.pipeline_primary())
        return left

    def pipeline_primary(self) -> Any:
        """A pipeline, or a parenthesised pipeline expression (one grammar, so ``(`` is tried both ways)."""
        stages = [self.spanset_or()]
        while self.at("|"):
            self.take()
            stages.append(self.stage())
        return stages[0] if len(stages) == 1 else Pipeline(tuple(stages))

    def stage(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise TraceQLError("unexpected end of query after '|'")
        word = tok[1]
        if word in AGGREGATES:
            agg = self.aggregate()
            op = self.take()
            if op[1] not in SCALAR_OPS:
                raise TraceQLError(f"expected a comparison after {agg} at position {op[2]}, found {op[1]!r}")
            lit = self.operand()
            if not isinstance(lit, Lit) or lit.type not in ("int", "float", "duration"):
                raise TraceQLError(f"{agg} can only be compared with a number or a duration")
            return ScalarFilter(agg, op[1], lit)
        if word == "select":
            self.take()
            self.expect("(")
            attrs = [self.attribute()]
            while self.at(","):
                self.take()
                attrs.append(self.attribute())
            self.expect(")")
            return Select(tuple(attrs))
        if word == "by":
            self.take()
            self.expect("(")
            attr = self.attribute()
            self.expect(")")
            return GroupBy(attr)
        if word == "coalesce":
            self.take()
            self.expect("(")
            self.expect(")")
            return Coalesce()
        if word in ("rate", "count_over_time", "quantile_over_time", "histogram_over_time"):
            raise TraceQLError(f"metrics queries ({word}) are not supported by /api/search")
        return self.spanset_or()

    def aggregate(self) -> Aggregate:
        op = self.take()[1]
        self.expect("(")
        if op == "count":
            self.expect(")")
            return Aggregate("count", None)
        attr = self.attribute()
        self.expect(")")
        if attr.type not in (None, "duration"):
            raise TraceQLError(f"aggregate field expressions must resolve to a number type: {op}({attr})")
        return Aggregate(op, attr)

    def attribute(self) -> Attr:
        tok = self.peek()
        a = self.operand()
        if not isinstance(a, Attr):
            raise TraceQLError(f"expected an attribute at position {tok[2] if tok else 0}")
        return a

    # spanset level
    def spanset_or(self) -> Any:
        """spansetExpression: && and || bind equally and associate to the left (expr.y ``%left AND OR``)."""
        left = self.spanset_rel()
        while (self.at("&&") or self.at("||")) and self._spanset_follows():
            op = self.take()[1]
            left = SpansetOp(op, left, self.spanset_rel())
        return left

    def spanset_rel(self) -> Any:
        left = self.spanset_primary()
        while (tok := self.peek()) is not None and tok[1] in STRUCTURAL_OPS and self._spanset_follows():
            self.take()
            left = SpansetOp(tok[1], left, self.spanset_primary())
        return left

    def _spanset_follows(self) -> bool:
        """After an operator: a plain spanset expression (not a parenthesised pipeline) continues here."""
        j = self.i + 1
        depth = 0
        while j < len(self.toks) and self.toks[j][1] == "(":
            depth += 1
            j += 1
        if j >= len(self.toks) or self.toks[j][1] != "{":
            return False
        if depth == 0:
            return True
        # a parenthesised group: a spanset expression only if no '|' occurs before it closes
        level = depth
        j += 1
        while j < len(self.toks) and level > 0:
            t = self.toks[j][1]
            if t == "(":
                level += 1
            elif t == ")":
                level -= 1
            elif t == "|" and level <= depth:
                return False
            j += 1
        return True

    def spanset_primary(self) -> Any:
        tok = self.take()
        if tok[1] == "(":
            save = self.i
            inner = self.spanset_or()
            if self.at(")"):
                self.take()
                return inner
            # a parenthesised pipeline: ``({ ... } | count() > 1) && { ... }``
            self.i = save
            inner = self.pipeline_expr()
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
        """fieldExpression: && and || bind equally and associate to the left (expr.y ``%left AND OR``)."""
        left = self.field_primary()
        while self.at("&&") or self.at("||"):
            op = self.take()[1]
            left = BoolOp(op, left, self.field_primary())
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
    elif lt == "int":
        # vparquet3 block_traceql.go createAttributeIterator: an int literal reads the int column only
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif lt == "float":
        ok = isinstance(value, float)
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


@dataclass
class SpanSet:
    """One result of a query in one trace: its spans and the attributes pipeline stages attached."""

    spans: list[SpanView]
    attributes: list[tuple[str, Any]] = field(default_factory=list)
    scalar: Any = None


class _Relations:
    """Parent links of one trace, for the structural operators (Tempo uses nested sets; same answers)."""

    def __init__(self, spans: list[SpanView]) -> None:
        self.parent = {v.span.span_id: v.span.parent_span_id for v in spans}

    def ancestors(self, sid: bytes) -> list[bytes]:
        out, seen = [], {sid}
        p = self.parent.get(sid, b"")
        while p and p not in seen:
            out.append(p)
            seen.add(p)
            p = self.parent.get(p, b"")
        return out

    def related(self, op: str, lhs: list[SpanView], r: SpanView) -> bool:
        rid, rparent = r.span.span_id, r.span.parent_span_id
        match op.lstrip("!"):
            case ">":  # r is a child of an lhs span
                return bool(rparent) and any(v.span.span_id == rparent for v in lhs)
            case "<":  # r is the parent of an lhs span
                return any(v.span.parent_span_id == rid for v in lhs)
            case ">>":  # r descends from an lhs span
                anc = set(self.ancestors(rid))
                return any(v.span.span_id in anc for v in lhs)
            case "<<":  # r is an ancestor of an lhs span
                return any(rid in self.ancestors(v.span.span_id) for v in lhs)
            case "~":  # r shares its parent with another lhs span
                return bool(rparent) and any(v.span.parent_span_id == rparent and v is not r for v in lhs)
        raise TraceQLError(f"spanset operation ({op}) not supported")


def _unique(sets: list[SpanSet]) -> list[SpanView]:
    out: list[SpanView] = []
    seen: set[int] = set()
    for ss in sets:
        for v in ss.spans:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def _keyword(attr: Attr, value: Any) -> Any:
    """Status and kind group by their names (``by(status)`` answers ``error``, as Static.AsAnyValue prints it)."""
    if attr.scope == "intrinsic" and attr.name == "status":
        return STATUS_NAMES.get(value, value)
    if attr.scope == "intrinsic" and attr.name == "kind":
        return KIND_NAMES.get(value, value)
    return value


def _numeric(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _aggregate(agg: Aggregate, spans: list[SpanView]) -> Any:
    """ast_execute.go Aggregate.evaluate (v2.4.1): count, or avg/min/max/sum of the field over the spans."""
    if agg.op == "count":
        return len(spans)
    assert agg.attr is not None
    values = [n for v in spans if (n := _numeric(lookup(v, agg.attr))) is not None]
    if not values:
        return None
    match agg.op:
        case "avg":
            return sum(values) / len(values)
        case "min":
            return min(values)
        case "max":
            return max(values)
    return sum(values)


def evaluate(query: Query, spans: list[SpanView]) -> list[SpanSet]:
    """The spansets the query leaves in this trace (engine.go ExecuteSearch); empty when it does not match."""
    rel: _Relations | None = None

    def relations() -> _Relations:
        nonlocal rel
        if rel is None:
            rel = _Relations(spans)
        return rel

    def run(node: Any, inputs: list[SpanSet]) -> list[SpanSet]:
        if isinstance(node, Spanset):
            out = []
            for ss in inputs:
                kept = [v for v in ss.spans if eval_cond(node.cond, v)]
                if kept:
                    out.append(SpanSet(kept, list(ss.attributes), ss.scalar))
            return out
        if isinstance(node, Pipeline):
            for stage in node.stages:
                inputs = run(stage, inputs)
                if not inputs:
                    break
            return inputs
        if isinstance(node, Select):
            return inputs  # the selected attributes are read when the answer is built
        if isinstance(node, ScalarFilter):
            out = []
            for ss in inputs:
                value = _aggregate(node.agg, ss.spans)
                if value is not None and _CMP[node.op](value, node.lit.value):
                    out.append(SpanSet(ss.spans, [*ss.attributes, (str(node.agg), value)], value))
            return out
        if isinstance(node, GroupBy):
            out = []
            for ss in inputs:
                groups: dict[Any, list[SpanView]] = {}
                for v in ss.spans:
                    key = _keyword(node.attr, lookup(v, node.attr))
                    groups.setdefault(None if key is _MISSING else key, []).append(v)
                for key, members in groups.items():
                    out.append(SpanSet(members, [*ss.attributes, (str(node), key)], ss.scalar))
            return out
        if isinstance(node, Coalesce):
            return [SpanSet(_unique(inputs))] if inputs else []
        assert isinstance(node, SpansetOp)
        out = []
        for ss in inputs:
            lhs, rhs = run(node.left, [ss]), run(node.right, [ss])
            if node.op in ("&&", "||"):
                if (lhs and rhs) if node.op == "&&" else (lhs or rhs):
                    out.append(SpanSet(_unique(lhs + rhs), list(ss.attributes), ss.scalar))
                continue
            if not lhs or not rhs:
                continue
            if len(lhs) > 1 or len(rhs) > 1:
                raise TraceQLError(
                    "spanset operators are not supported for multiple spansets per trace. consider using coalesce()"
                )
            negate, left = node.op.startswith("!"), lhs[0].spans
            kept = [r for r in rhs[0].spans if relations().related(node.op, left, r) != negate]
            if kept:
                out.append(SpanSet(kept, list(ss.attributes), ss.scalar))
        return out

    if not spans:
        return []
    return run(query.root, [SpanSet(list(spans))])
