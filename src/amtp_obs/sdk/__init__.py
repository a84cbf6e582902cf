"""The AMTP LLM telemetry SDK: ``configure()`` once, then record each LLM call with ``llm_call()``.

    from amtp_obs.sdk import configure, llm_call
    configure("my-agent")
    with llm_call("openai", "gpt-4o") as call:
        reply = client.chat.completions.create(...)
        call.set_usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)

Every span and counter carries the names of ``amtp_obs.contract``; see docs/instrumentation.md.
Test support lives in ``amtp_obs.sdk.testing``; everything under ``_internal`` may change.
"""

from amtp_obs.sdk._internal.call import LLMCall, llm_call
from amtp_obs.sdk._internal.config import (
    Configuration,
    ConfigurationError,
    OtlpProtocol,
    configure,
    force_flush,
    shutdown,
)
from amtp_obs.sdk._internal.usage import Provenance, RequestType, Usage

__all__ = [
    "Configuration",
    "ConfigurationError",
    "LLMCall",
    "OtlpProtocol",
    "Provenance",
    "RequestType",
    "Usage",
    "configure",
    "force_flush",
    "llm_call",
    "shutdown",
]
