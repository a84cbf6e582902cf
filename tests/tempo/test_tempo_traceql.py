"""The TraceQL subset: what parses into what, and what is refused with which message."""

from __future__ import annotations

import pytest

from amtp_obs.tempo import traceql as tq


def test_parse_structure() -> None:
    q = tq.parse('{ span.llm.model = "gpt-4o" && (status = error || duration > 1.5s) }')
    root = q.root
    assert isinstance(root, tq.Spanset)
    assert isinstance(root.cond, tq.BoolOp) and root.cond.op == "&&"
    left = root.cond.left
    assert left == tq.Cond(tq.Attr("span", "llm.model"), "=", tq.Lit("string", "gpt-4o"))
    right = root.cond.right
    assert isinstance(right, tq.BoolOp) and right.op == "||"
    assert right.right == tq.Cond(tq.Attr("intrinsic", "duration"), ">", tq.Lit("duration", 1_500_000_000))
    assert [str(a) for a in q.attributes] == ["span.llm.model", "status", "duration"]


def test_literals() -> None:
    def lit(text: str) -> tq.Lit:
        cond = tq.parse(f"{{ .x = {text} }}").root.cond
        assert isinstance(cond, tq.Cond)
        return cond.lit

    assert lit("42") == tq.Lit("int", 42)
    assert lit("-7") == tq.Lit("int", -7)
    assert lit("0.25") == tq.Lit("float", 0.25)
    assert lit("100ms") == tq.Lit("duration", 100_000_000)
    assert lit("true") == tq.Lit("bool", True)
    assert lit('"a \\"quoted\\" b"') == tq.Lit("string", 'a "quoted" b')
    assert lit("`raw\\n`") == tq.Lit("string", "raw\\n")
    assert lit("nil") == tq.Lit("nil", None)


def test_value_on_the_left_is_flipped() -> None:
    cond = tq.parse("{ 10 < .n }").root.cond
    assert cond == tq.Cond(tq.Attr("unscoped", "n"), ">", tq.Lit("int", 10))


def test_spanset_operators_and_parentheses() -> None:
    root = tq.parse("({ .a = 1 } || { .b = 2 }) && { }").root
    assert isinstance(root, tq.SpansetOp) and root.op == "&&"
    assert isinstance(root.left, tq.SpansetOp) and root.left.op == "||"
    assert root.right == tq.Spanset(None)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("", "empty query"),
        ("{", "unexpected end"),
        ("{ .a = 1 } }", "unexpected '}'"),
        ("{ .a 1 }", "expected a comparison operator"),
        ("{ foo = 1 }", "unknown identifier 'foo'"),
        ("{ status > ok }", "only be compared with = or !="),
        ("{ status = 200 }", "same type"),
        ("{ name = 3 }", "same type"),
        ("{ .a =~ 3 }", "needs a string regular expression"),
        ('{ .a =~ "[" }', "invalid regular expression"),
        ("{ .a = 1 } | count() > ok", "number or a duration"),
        ("{ .a = 1 } | avg(name) > 1", "must resolve to a number type"),
        ("{ .a = 1 } | select(1)", "expected an attribute"),
        ("{ !(.a = 1) }", "negation"),
        ("{ parent.a = 1 }", "not supported"),
        ("{ .a = .b }", "must compare an attribute with a value"),
        ("{ .a = 1 # }", "unexpected character '#'"),
    ],
)
def test_errors(query: str, fragment: str) -> None:
    with pytest.raises(tq.TraceQLError) as exc:
        tq.parse(query)
    assert fragment in str(exc.value)


def test_regex_is_anchored_and_types_must_agree() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span
    from tempo_helpers import kv

    s = Span(name="x", attributes=[kv("model", "gpt-4o"), kv("n", 5), kv("flag", True)])
    view = tq.SpanView(s, {"region": "eu"}, tq.TraceContext("x", "svc", 0))

    def match(q: str) -> bool:
        return bool(tq.evaluate(tq.parse(q), [view]))

    assert match('{ .model =~ "gpt.*" }')
    assert not match('{ .model =~ "pt" }')  # fully anchored
    assert match("{ .n = 5 }") and not match("{ .n = 5.0 }")  # a float literal reads the float column only
    assert not match('{ .n = "5" }')  # int attribute vs string literal
    assert not match("{ .flag = 1 }")  # bool is not a number
    assert match("{ .missing = nil }") and not match("{ .model = nil }")
    assert not match('{ .missing != "x" }')  # a missing attribute matches nothing
    assert match('{ .region = "eu" }') and not match('{ span.region = "eu" }')
