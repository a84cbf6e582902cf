"""The AMTP LLM telemetry SDK: ``configure()`` once, then wrap each LLM call in ``llm_call()``.

    from amtp_obs.sdk import configure, llm_call
    configure("my-agent")
    with llm_call("openai", "gpt-4o") as call:
        reply = client.chat.completions.create(...)
        call.set_usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)

Every span and counter carries the names of ``amtp_obs.contract``; see docs/instrumentation.md.
"""

from amtp_obs.sdk._internal.call import LLMCall, UsageExtractor, llm_call, traced_llm
from amtp_obs.sdk._internal.config import (
    PROTOCOL_GRPC,
    PROTOCOL_HTTP_PROTOBUF,
    PROTOCOLS,
    ConfigurationError,
    Settings,
    Telemetry,
    configure,
    force_flush,
    get_telemetry,
    is_configured,
    shutdown,
)

__all__ = [
    "PROTOCOLS",
    "PROTOCOL_GRPC",
    "PROTOCOL_HTTP_PROTOBUF",
    "ConfigurationError",
    "LLMCall",
    "Settings",
    "Telemetry",
    "UsageExtractor",
    "configure",
    "force_flush",
    "get_telemetry",
    "is_configured",
    "llm_call",
    "shutdown",
    "traced_llm",
]
