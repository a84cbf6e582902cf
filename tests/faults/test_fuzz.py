"""Property-based fuzzing of the collector's OTLP/HTTP endpoints and the trace store's HTTP API.

Random bodies, content types, encodings, methods, paths, trace ids and query parameters against
real processes: the answer is always 2xx or 4xx (never 5xx, never a dropped connection), and the
process still serves a valid request afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from conftest import start

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # no .hypothesis/ directory in the checkout
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.TempoPorts, harness.CollectorPorts]]:
    root = tmp_path_factory.mktemp("fuzz")
    tports, cports = harness.TempoPorts(), harness.CollectorPorts()
    started: list[harness.Proc] = []
    try:
        start(started, harness.tempo_proc(root / "tempo", tports))
        start(started, harness.collector_proc(root / "collector", cports, tports.otlp_target))
        yield tports, cports
        for p in started:
            assert p.alive(), f"{p.name} died during fuzzing:\n{p.log_tail()}"
    finally:
        for p in reversed(started):
            p.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def _ok(r: httpx.Response) -> None:
    assert r.status_code < 500, f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}"
    assert 200 <= r.status_code < 500


def _valid_export() -> bytes:
    return harness.build_request(4242, 0, 4, 2)[0].SerializeToString()


CONTENT_TYPES = st.sampled_from(
    [
        "application/x-protobuf",
        "application/json",
        "application/protobuf",
        "text/plain",
        "application/x-protobuf; charset=utf-8",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
        "",
        "garbage/\x7f",
    ]
)
OTLP_PATHS = st.sampled_from(["/v1/traces", "/v1/metrics", "/v1/logs", "/v1/traces/", "/v2/traces", "/"])
ENCODINGS = st.sampled_from([None, "gzip", "deflate", "br", "zstd", "snappy", "identity", "bogus"])


def _json_bodies() -> st.SearchStrategy[bytes]:
    leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    tree = st.recursive(
        leaf,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=20,
    )
    shaped = st.fixed_dictionaries(
        {"resourceSpans": st.lists(st.fixed_dictionaries({"scopeSpans": st.lists(tree, max_size=3)}), max_size=3)}
    )
    return (tree | shaped).map(lambda v: json.dumps(v).encode())


VALID_EXPORT = _valid_export()


@st.composite
def _mutated_protobuf(draw: st.DrawFn) -> bytes:
    """A valid export with a few bytes flipped and possibly truncated: exercises the decoder's edges."""
    b = bytearray(VALID_EXPORT)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(b) - 1))
        b[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(b)))
    return bytes(b[:cut])


BODIES = st.binary(max_size=2048) | _json_bodies() | _mutated_protobuf()


@FUZZ
@given(path=OTLP_PATHS, ctype=CONTENT_TYPES, encoding=ENCODINGS, body=BODIES)
def test_collector_otlp_http_never_5xx(
    stack: tuple[harness.TempoPorts, harness.CollectorPorts],
    client: httpx.Client,
    path: str,
    ctype: str,
    encoding: str | None,
    body: bytes,
) -> None:
    _tports, cports = stack
    headers = {"content-type": ctype}
    if encoding:
        headers["content-encoding"] = encoding
    _ok(client.post(cports.http_url + path, content=body, headers=headers))


@FUZZ
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), path=OTLP_PATHS)
def test_collector_otlp_http_other_methods(
    stack: tuple[harness.TempoPorts, harness.CollectorPorts], client: httpx.Client, method: str, path: str
) -> None:
    _ok(client.request(method, stack[1].http_url + path))


TRACE_IDS = (
    st.binary(min_size=0, max_size=20).map(bytes.hex)
    | st.text(max_size=40)
    | st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=40)
)
SEARCH_KEYS = st.sampled_from(["tags", "q", "limit", "start", "end", "minDuration", "maxDuration", "spss", "x"])


@FUZZ
@given(trace_id=TRACE_IDS, v2=st.booleans(), accept=st.sampled_from(["", "application/protobuf", "*/*", "x/y"]))
def test_tempo_trace_lookup_never_5xx(
    stack: tuple[harness.TempoPorts, harness.CollectorPorts],
    client: httpx.Client,
    trace_id: str,
    v2: bool,
    accept: str,
) -> None:
    prefix = "/api/v2/traces/" if v2 else "/api/traces/"
    headers = {"accept": accept} if accept else {}
    _ok(client.get(stack[0].api + prefix + quote(trace_id, safe=""), headers=headers))


@FUZZ
@given(params=st.dictionaries(SEARCH_KEYS, st.text(max_size=60), max_size=5))
def test_tempo_search_never_5xx(
    stack: tuple[harness.TempoPorts, harness.CollectorPorts], client: httpx.Client, params: dict[str, str]
) -> None:
    _ok(client.get(stack[0].api + "/api/search", params=params))


@FUZZ
@given(
    path=st.lists(st.text(max_size=15), min_size=1, max_size=5).map(lambda xs: "/".join(quote(x, safe="") for x in xs)),
    prefix=st.sampled_from(["/api/", "/api/search/tag/", "/api/v2/search/tag/", "/api/v2/search/", "/", "/metrics/"]),
    params=st.dictionaries(st.sampled_from(["scope", "q", "start", "end", "limit"]), st.text(max_size=30), max_size=3),
)
def test_tempo_random_paths_never_5xx(
    stack: tuple[harness.TempoPorts, harness.CollectorPorts],
    client: httpx.Client,
    path: str,
    prefix: str,
    params: dict[str, str],
) -> None:
    _ok(client.get(stack[0].api + prefix + path, params=params))


def test_still_serving_after_fuzzing(
    stack: tuple[harness.TempoPorts, harness.CollectorPorts], client: httpx.Client
) -> None:
    """Runs last in this module: a valid export still flows collector -> store and is readable."""
    tports, cports = stack
    req, tids = harness.build_request(777, 0, 4, 2)
    r = client.post(
        cports.http_url + "/v1/traces",
        content=req.SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert r.status_code == 200
    want = harness.expected_span_ids(req)
    assert harness.wait_until(
        lambda: all(harness.stored_span_ids(client, tports.api, t) >= ids for t, ids in want.items()), timeout=10
    )
    assert client.get(tports.api + "/ready").status_code == 200
    assert len(tids) == 2
