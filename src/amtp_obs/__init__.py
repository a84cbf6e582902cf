"""AMTP Observability: the LLM instrumentation contract, SDK, checks and embedded stack."""

__version__ = "0.1.0"
