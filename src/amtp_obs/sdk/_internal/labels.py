"""Bounded metric labels: one Prometheus series per distinct value, so the values must stay few.

Spans keep the model name exactly as given (drill-down needs it); counters get a normalised form,
and past a per-process cap an explicit overflow value (``contract.LLM_MODEL_OVERFLOW``) that an
alert watches, instead of silently dropping or exploding series (docs/accounting.md).
"""

from __future__ import annotations

import logging
import re
import threading

from amtp_obs import contract

_log = logging.getLogger("amtp_obs.sdk")

_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
_LONG_HEX = re.compile(r"(?<![0-9a-z])[0-9a-f]{16,}(?![0-9a-z])")
_TIMESTAMP = re.compile(r"\d{4}-?\d{2}-?\d{2}[t_ ]\d{2}:?\d{2}(:?\d{2}(\.\d+)?)?z?")
_OPENAI_FT_JOB = re.compile(r"^(ft:[^:]+:[^:]*:[^:]*):[^:]+$")
_NOT_ALLOWED = re.compile(r"[^a-z0-9._:/@+-]+")
_SEPARATORS = re.compile(r"([._:/@+-])[._:/@+-]+")


def normalize_model(name: str) -> str:
    """A model name as a bounded label value: lowercase, no request/job ids, uuids or timestamps.

    A vendor's dated snapshot (``gpt-4o-2024-08-06``, ``claude-3-5-sonnet-20241022``) is kept: the
    vendor releases few of them and they are priced differently. A time of day is not.
    """
    s = name.strip().lower()
    s = _OPENAI_FT_JOB.sub(r"\1", s)  # ft:<base>:<org>:<suffix>:<job id> -> without the job id
    s = _TIMESTAMP.sub("", s)
    s = _UUID.sub("", s)
    s = _LONG_HEX.sub("", s)
    s = _NOT_ALLOWED.sub("_", s)
    s = _SEPARATORS.sub(r"\1", s).strip("._:/@+-")
    return s[: contract.LLM_MODEL_LABEL_MAX_LENGTH] or "unknown"


class ModelLabels:
    """The first ``limit`` distinct normalised models of a process keep their name; later ones overflow."""

    def __init__(self, limit: int = contract.LLM_MODEL_LABEL_LIMIT) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False

    def label(self, model: str) -> str:
        value = normalize_model(model)
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
            if not self._warned:
                self._warned = True
                _log.warning(
                    "amtp_obs: more than %d distinct model names in this process; counters record further "
                    "ones as %s=%r (the spans keep the real name). First overflowing model: %r",
                    self.limit,
                    contract.LLM_MODEL,
                    contract.LLM_MODEL_OVERFLOW,
                    model,
                )
        return contract.LLM_MODEL_OVERFLOW
