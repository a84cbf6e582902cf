"""Auto-instrumentation of the official ``openai`` and ``anthropic`` clients.

``instrument()`` wraps the clients' chat methods at class level, so every client instance (made
before or after) emits one ``llm.completion`` span and the contract's token counters per request,
through the SDK (``amtp_obs.sdk.llm_call``). ``uninstrument()`` puts the original functions back.
See docs/instrumentation-auto.md for what is covered and what is not.
"""

from __future__ import annotations

__all__ = ["instrument", "instrumented", "uninstrument"]


def instrument(*, openai: bool = True, anthropic: bool = True, include_usage: bool = True) -> None:
    """Patch the installed clients (a client that is not installed is skipped). Idempotent.

    ``include_usage``: for OpenAI streams without ``stream_options``, ask the API for the final
    usage chunk, read the token counts from it and hide it (and the ``usage: null`` it adds to the
    other chunks) from the caller, who sees the chunks it would see uninstrumented. False: send the
    request as written; such streams then record provenance ``unavailable``. A later call updates
    this setting; it never removes a patch (use :func:`uninstrument`).
    """
    from amtp_obs.instrument import _core  # loaded on use: importing this package stays cheap

    _core.OPTIONS.include_usage = include_usage
    targets: list[_core.Target] = []
    if openai:
        from amtp_obs.instrument import openai as openai_adapter

        targets += openai_adapter.targets()
    if anthropic:
        from amtp_obs.instrument import anthropic as anthropic_adapter

        targets += anthropic_adapter.targets()
    _core.patch(targets)


def uninstrument() -> None:
    """Restore every patched method to the exact original object. Idempotent."""
    from amtp_obs.instrument import _core

    _core.unpatch()
    _core.OPTIONS.include_usage = True


def instrumented() -> list[str]:
    """``module.Class.method`` of every method patched now."""
    from amtp_obs.instrument import _core

    return sorted(f"{cls.__module__}.{cls.__qualname__}.{attr}" for cls, attr in _core.patched())
