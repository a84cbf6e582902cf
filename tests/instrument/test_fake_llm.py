"""The fake vendor server itself: wire formats, deterministic counts, knobs, and clear 4xx errors."""

from __future__ import annotations

import json

import httpx
import pytest

from amtp_obs.testing.fake_llm import (
    ANTHROPIC_PATH,
    HEADER_CACHE_CREATION,
    HEADER_CACHE_READ,
    HEADER_CHUNKS,
    HEADER_ERROR,
    HEADER_FAIL_AFTER,
    HEADER_REASONING,
    HEADER_REPLAY,
    HEADER_USAGE_DETAILS,
    OPENAI_PATH,
    FakeLLMServer,
    Recording,
)

OPENAI_BODY = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}
ANTHROPIC_BODY = {**OPENAI_BODY, "max_tokens": 10, "system": "be brief"}


def _sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_openai_json_counts(server: FakeLLMServer) -> None:
    r = httpx.post(server.base_url + OPENAI_PATH, json=OPENAI_BODY, headers={HEADER_CHUNKS: "4"})
    assert r.status_code == 200
    body = r.json()
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (3, 4, 7)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0  # sent as the current API sends it
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert len(body["choices"][0]["message"]["content"].split()) == 4


def test_openai_cache_and_reasoning_are_parts_of_prompt_and_completion(server: FakeLLMServer) -> None:
    headers = {HEADER_CHUNKS: "4", HEADER_CACHE_READ: "100", HEADER_REASONING: "30"}
    usage = httpx.post(server.base_url + OPENAI_PATH, json=OPENAI_BODY, headers=headers).json()["usage"]
    assert usage["prompt_tokens"] == 3 + 100 and usage["prompt_tokens_details"]["cached_tokens"] == 100
    assert usage["completion_tokens"] == 4 + 30 and usage["completion_tokens_details"]["reasoning_tokens"] == 30
    assert usage["total_tokens"] == 103 + 34


def test_anthropic_cache_is_reported_beside_input(server: FakeLLMServer) -> None:
    headers = {HEADER_CACHE_READ: "100", HEADER_CACHE_CREATION: "20"}
    usage = httpx.post(server.base_url + ANTHROPIC_PATH, json=ANTHROPIC_BODY, headers=headers).json()["usage"]
    assert usage["input_tokens"] == 5  # excludes the cache, as Anthropic's does
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (100, 20)


@pytest.mark.parametrize("path", [OPENAI_PATH, ANTHROPIC_PATH])
def test_usage_details_can_be_left_out(server: FakeLLMServer, path: str) -> None:
    body = ANTHROPIC_BODY if path == ANTHROPIC_PATH else OPENAI_BODY
    usage = httpx.post(server.base_url + path, json=body, headers={HEADER_USAGE_DETAILS: "0"}).json()["usage"]
    assert set(usage) <= {"prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens"}


def test_replay_sends_the_recording_verbatim(server: FakeLLMServer) -> None:
    server.register("t-json", Recording(body={"hello": [1, 2]}))
    server.register("t-sse", Recording.from_dict({"events": [{"event": "x", "data": {"a": 1}}, {"data": "[DONE]"}]}))
    assert httpx.post(server.base_url + OPENAI_PATH, json=OPENAI_BODY, headers={HEADER_REPLAY: "t-json"}).json() == {
        "hello": [1, 2]
    }
    r = httpx.post(
        server.base_url + OPENAI_PATH, json={**OPENAI_BODY, "stream": True}, headers={HEADER_REPLAY: "t-sse"}
    )
    assert r.text == 'event: x\ndata: {"a": 1}\n\ndata: [DONE]\n\n'
    r = httpx.post(server.base_url + OPENAI_PATH, json=OPENAI_BODY, headers={HEADER_REPLAY: "nope"})
    assert r.status_code == 400 and "no recording named 'nope'" in r.json()["error"]["message"]


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_sse_usage_chunk_only_when_asked(server: FakeLLMServer, include_usage: bool) -> None:
    body = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": include_usage}}
    r = httpx.post(server.base_url + OPENAI_PATH, json=body, headers={HEADER_CHUNKS: "2"})
    data = _sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert usage_chunks == [chunks[-1]] and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == 2
    else:
        assert usage_chunks == [] and all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]).split() != []


def test_anthropic_sse_event_sequence(server: FakeLLMServer) -> None:
    r = httpx.post(server.base_url + ANTHROPIC_PATH, json={**ANTHROPIC_BODY, "stream": True})
    events = [line[len("event: ") :] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    assert events.count("content_block_delta") == server.chunks
    data = [json.loads(d) for d in _sse_data(r.text)]
    assert data[0]["message"]["usage"]["input_tokens"] == 5  # 3 message words + 2 system words
    assert data[-2]["usage"]["output_tokens"] == server.chunks


def test_error_injection(server: FakeLLMServer) -> None:
    r = httpx.post(server.base_url + ANTHROPIC_PATH, json=ANTHROPIC_BODY, headers={HEADER_ERROR: "429"})
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_stream_is_cut_after_n_events(server: FakeLLMServer) -> None:
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            server.base_url + OPENAI_PATH,
            json={**OPENAI_BODY, "stream": True},
            headers={HEADER_FAIL_AFTER: "2"},
        ) as r,
    ):
        r.read()


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "needle"),
    [
        (OPENAI_PATH, b"{not json", {}, 400, "not valid JSON"),
        (OPENAI_PATH, json.dumps({"messages": []}).encode(), {}, 400, "'model' is required"),
        (OPENAI_PATH, json.dumps({"model": "m", "messages": []}).encode(), {}, 400, "'messages' is required"),
        (OPENAI_PATH, json.dumps({"model": "m", "messages": ["x"]}).encode(), {}, 400, "messages[0]"),
        (ANTHROPIC_PATH, json.dumps(OPENAI_BODY).encode(), {}, 400, "'max_tokens' is required"),
        (OPENAI_PATH, json.dumps(OPENAI_BODY).encode(), {HEADER_CHUNKS: "many"}, 400, HEADER_CHUNKS),
        (OPENAI_PATH, json.dumps(OPENAI_BODY).encode(), {HEADER_CHUNKS: "-1"}, 400, ">= 0"),
        ("/v1/embeddings", b"{}", {}, 404, "no route"),
    ],
)
def test_bad_requests_get_clear_errors(
    server: FakeLLMServer, path: str, content: bytes, headers: dict[str, str], status: int, needle: str
) -> None:
    r = httpx.post(server.base_url + path, content=content, headers=headers)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]
