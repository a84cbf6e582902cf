"""A local HTTP server that plays the OpenAI Chat Completions and Anthropic Messages APIs.

The official clients are pointed at it (``base_url``, a dummy key, ``max_retries=0``) so tests and
``amtp-obs demo`` exercise the real client code over real sockets: JSON answers, SSE streams, HTTP
errors and connections that die mid-stream. Everything is deterministic:

* prompt tokens = words in the request's message texts (and ``system``), at least 1, plus the
  cached prefix asked for (cache read, and for Anthropic cache creation); as the vendors do, OpenAI's
  ``prompt_tokens`` includes the cached tokens and Anthropic's ``input_tokens`` excludes them;
* the reply has ``chunks`` words, streamed one word per content delta; completion tokens = ``chunks``
  plus the reasoning tokens asked for (OpenAI reports them in ``completion_tokens_details``);
* the usage detail fields (OpenAI ``*_tokens_details``, Anthropic ``cache_*_input_tokens``) are sent
  as the current APIs send them, or left out (``usage_details=False``: older models and
  OpenAI-compatible servers);
* a registered recording (``register()``, header ``x-fake-llm-replay``) is replayed verbatim, so
  tests can feed payloads recorded from the real vendors through the real clients.

Knobs are server-wide attributes (defaults) or per-request headers (the ``HEADER_*`` constants), so
one server can serve tests that want different behaviour. Bad requests get a 400 with a JSON message
in the vendor's error shape, never a traceback.
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

HEADER_ERROR = "x-fake-llm-error"
"""Answer with this HTTP status (e.g. 429, 500) and the vendor's error body instead of a reply."""
HEADER_CHUNKS = "x-fake-llm-chunks"
"""Words in the reply (= content deltas in a stream = completion tokens)."""
HEADER_FAIL_AFTER = "x-fake-llm-fail-after"
"""Abort the connection after this many SSE events (streams only)."""
HEADER_CACHE_READ = "x-fake-llm-cache-read-tokens"
"""Prompt tokens read from the cache (OpenAI ``cached_tokens``, Anthropic ``cache_read_input_tokens``)."""
HEADER_CACHE_CREATION = "x-fake-llm-cache-creation-tokens"
"""Anthropic only: report this many ``cache_creation_input_tokens`` (OpenAI reports no cache writes)."""
HEADER_REASONING = "x-fake-llm-reasoning-tokens"
"""OpenAI only: report this many ``completion_tokens_details.reasoning_tokens`` (part of the completion)."""
HEADER_USAGE_DETAILS = "x-fake-llm-usage-details"
"""``0``: leave the usage detail fields out (a response without cache or reasoning detail); ``1``: send them."""
HEADER_REPLAY = "x-fake-llm-replay"
"""Answer with the recording registered under this name (see :meth:`FakeLLMServer.register`)."""
HEADER_DELAY_MS = "x-fake-llm-delay-ms"
"""Pause this many milliseconds before each SSE event after the first (a slow model)."""

_WORDS = ("the", "quick", "agent", "reads", "a", "token", "stream", "and", "answers", "politely")


class BadRequest(Exception):
    """What is wrong with a request; becomes a 400 with this message."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, for tests that check what the client sent."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Recording:
    """A vendor answer to replay verbatim: a JSON body, or the SSE events of a stream.

    ``events`` are (event name or None, data) pairs; data is a JSON object or a raw string such as
    OpenAI's ``[DONE]``.
    """

    body: Any = None
    events: tuple[tuple[str | None, Any], ...] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recording:
        """``{"body": {...}}`` or ``{"events": [{"event": name|null, "data": ...}, ...]}`` (the test files' shape)."""
        if "events" in data:
            return cls(events=tuple((e.get("event"), e["data"]) for e in data["events"]))
        if "body" in data:
            return cls(body=data["body"])
        raise ValueError("a recording needs 'body' (a JSON answer) or 'events' (an SSE stream)")


@dataclass(frozen=True)
class _Plan:
    model: str
    prompt_tokens: int
    """Words in the request (the uncached input)."""
    words: list[str]
    error: int | None
    fail_after: int | None
    cache_read: int
    cache_creation: int
    reasoning: int
    usage_details: bool
    delay_ms: int
    stream: bool
    include_usage: bool

    @property
    def completion_tokens(self) -> int:
        return len(self.words) + self.reasoning


def count_words(value: Any) -> int:
    """Words in a message content: a string or a list of content blocks with ``text``."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item.get("text", "") if isinstance(item, dict) else item) for item in value)
    return 0


def _int_header(headers: Any, name: str, default: int | None) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"header {name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise BadRequest(f"header {name} must be >= 0, got {value}")
    return value


@dataclass
class FakeLLMServer:
    """Threaded HTTP/1.1 server on 127.0.0.1; use as a context manager or call start()/stop()."""

    host: str = "127.0.0.1"
    port: int = 0
    chunks: int = 5
    error_status: int | None = None
    fail_after: int | None = None
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    usage_details: bool = True
    delay_ms: int = 0
    requests: list[RecordedRequest] = field(default_factory=list, repr=False)
    recordings: dict[str, Recording] = field(default_factory=dict, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _ids: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FakeLLMServer:
        if self._server is not None:
            return self
        server = _QuietServer((self.host, self.port), _make_handler(self))
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What to pass as ``openai.OpenAI(base_url=...)`` (the client appends ``/chat/completions``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What to pass as ``anthropic.Anthropic(base_url=...)`` (the client appends ``/v1/messages``)."""
        return self.base_url

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def register(self, name: str, recording: Recording) -> None:
        """Replay ``recording`` for requests that send header ``x-fake-llm-replay: <name>``."""
        with self._lock:
            self.recordings[name] = recording

    def _recording(self, headers: Any) -> Recording | None:
        name = headers.get(HEADER_REPLAY)
        if name is None:
            return None
        with self._lock:
            recording = self.recordings.get(name)
        if recording is None:
            raise BadRequest(f"header {HEADER_REPLAY}: no recording named {name!r} is registered")
        return recording

    # ---------------------------------------------------------------- internals
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _plan(self, body: Any, headers: Any, *, anthropic: bool) -> _Plan:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required and must be a non-empty string")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' is required and must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise BadRequest(f"messages[{i}] must be an object with a 'role'")
        if anthropic and not isinstance(body.get("max_tokens"), int):
            raise BadRequest("'max_tokens' is required and must be an integer")
        prompt = sum(count_words(m.get("content")) for m in messages) + count_words(body.get("system"))
        chunks = _int_header(headers, HEADER_CHUNKS, self.chunks) or 0
        stream_options = body.get("stream_options") or {}
        return _Plan(
            model=model,
            prompt_tokens=max(prompt, 1),
            words=[_WORDS[i % len(_WORDS)] for i in range(chunks)],
            error=_int_header(headers, HEADER_ERROR, self.error_status),
            fail_after=_int_header(headers, HEADER_FAIL_AFTER, self.fail_after),
            cache_read=_int_header(headers, HEADER_CACHE_READ, self.cache_read_tokens) or 0,
            cache_creation=_int_header(headers, HEADER_CACHE_CREATION, self.cache_creation_tokens) or 0,
            reasoning=_int_header(headers, HEADER_REASONING, self.reasoning_tokens) or 0,
            usage_details=bool(_int_header(headers, HEADER_USAGE_DETAILS, int(self.usage_details))),
            delay_ms=_int_header(headers, HEADER_DELAY_MS, self.delay_ms) or 0,
            stream=bool(body.get("stream")),
            include_usage=isinstance(stream_options, dict) and bool(stream_options.get("include_usage")),
        )


# -------------------------------------------------------------------- vendor payloads
def _openai_usage(plan: _Plan) -> dict[str, Any]:
    """OpenAI's prompt_tokens includes the cached tokens, completion_tokens the reasoning tokens."""
    prompt = plan.prompt_tokens + plan.cache_read
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": prompt + plan.completion_tokens,
    }
    if plan.usage_details:
        usage["prompt_tokens_details"] = {"cached_tokens": plan.cache_read, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": plan.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def openai_completion(plan: _Plan, ident: str) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(plan.words), "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _openai_usage(plan),
    }


def openai_chunks(plan: _Plan, ident: str) -> Iterator[dict[str, Any]]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": plan.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if plan.include_usage:
            out["usage"] = None
        return out

    yield chunk({"role": "assistant", "content": ""}, None)
    for i, word in enumerate(plan.words):
        yield chunk({"content": word if i == len(plan.words) - 1 else word + " "}, None)
    yield chunk({}, "stop")
    if plan.include_usage:
        yield {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": plan.model,
            "choices": [],
            "usage": _openai_usage(plan),
        }


def _anthropic_usage(plan: _Plan, output_tokens: int) -> dict[str, Any]:
    """Anthropic's input_tokens excludes the cache: the cached parts are reported beside it."""
    usage: dict[str, Any] = {"input_tokens": plan.prompt_tokens, "output_tokens": output_tokens}
    if plan.usage_details:
        usage["cache_creation_input_tokens"] = plan.cache_creation
        usage["cache_read_input_tokens"] = plan.cache_read
    return usage


def anthropic_message(plan: _Plan, ident: str) -> dict[str, Any]:
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": " ".join(plan.words)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(plan, plan.completion_tokens),
    }


def anthropic_events(plan: _Plan, ident: str) -> Iterator[tuple[str, dict[str, Any]]]:
    start = anthropic_message(plan, ident)
    start.update(content=[], stop_reason=None, usage=_anthropic_usage(plan, 1))
    yield "message_start", {"type": "message_start", "message": start}
    yield (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        },
    )
    yield "ping", {"type": "ping"}
    for i, word in enumerate(plan.words):
        text = word if i == len(plan.words) - 1 else word + " "
        yield (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
        )
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": plan.completion_tokens},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _error_body(status: int, message: str, *, anthropic: bool) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "api_error")
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# -------------------------------------------------------------------- HTTP handler
class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-stream (closed early, cancelled) is normal here, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler(owner: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "amtp-fake-llm/1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read spans, not access logs."""

        def _send_json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send_json(404, {"error": {"message": f"no route GET {self.path}"}})

        def do_POST(self) -> None:
            anthropic = self.path.split("?")[0] == ANTHROPIC_PATH
            if self.path.split("?")[0] not in (OPENAI_PATH, ANTHROPIC_PATH):
                self._discard_body()
                self._send_json(404, {"error": {"message": f"no route POST {self.path}"}})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError as err:
                    raise BadRequest(f"request body is not valid JSON: {err}") from None
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner._record(RecordedRequest(self.path, headers, body))
                plan = owner._plan(body, self.headers, anthropic=anthropic)
                recording = owner._recording(self.headers)
            except BadRequest as err:
                self._send_json(400, _error_body(400, str(err), anthropic=anthropic))
                return
            if recording is not None and plan.error is None:
                if recording.events is not None:
                    self._stream(iter(recording.events), plan)
                else:
                    self._send_json(200, recording.body)
                return
            if plan.error is not None:
                message = f"injected error {plan.error} (header {HEADER_ERROR})"
                self._send_json(plan.error, _error_body(plan.error, message, anthropic=anthropic))
                return
            n = owner._next_id()
            if anthropic:
                ident = f"msg_fake_{n}"
                if plan.stream:
                    self._stream(anthropic_events(plan, ident), plan)
                    return
                self._send_json(200, anthropic_message(plan, ident))
            else:
                ident = f"chatcmpl-fake-{n}"
                if plan.stream:
                    events: Iterator[tuple[Any, Any]] = (
                        (None, c) for c in itertools.chain(openai_chunks(plan, ident), ["[DONE]"])
                    )
                    self._stream(events, plan)
                    return
                self._send_json(200, openai_completion(plan, ident))

        def _discard_body(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)

        def _stream(self, events: Iterator[tuple[Any, Any]], plan: _Plan) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for sent, (event, data) in enumerate(events):
                if plan.fail_after is not None and sent >= plan.fail_after:
                    self._abort()
                    return
                if plan.delay_ms and sent:
                    time.sleep(plan.delay_ms / 1000)
                text = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
                self._write_chunk(frame.encode())
            self._write_chunk(b"")

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _abort(self) -> None:
            """Drop the connection mid-body: the client sees an incomplete chunked response."""
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    """``python -m amtp_obs.testing.fake_llm [--port N]``: serve until interrupted (for demos)."""
    import argparse

    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic API on 127.0.0.1 (for tests and demos)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--chunks", type=int, default=5, help="words per reply (default: 5)")
    args = parser.parse_args(argv)
    if args.chunks < 0:
        parser.error("--chunks must be >= 0")
    server = FakeLLMServer(port=args.port, chunks=args.chunks).start()
    print(f"OpenAI base_url:    {server.openai_base_url}", flush=True)
    print(f"Anthropic base_url: {server.anthropic_base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
