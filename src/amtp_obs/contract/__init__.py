"""The LLM instrumentation contract: the one definition of every span, attribute and metric name.

The dashboard, Tempo's span-metric dimensions, the alert rules, the SDK, the instrumentations and
the checks all read these names from here; nothing else in the project retypes them. The design
(`shared/spec`, "LLM Instrumentation Contract") is corrected by NOTES §1 (unit ``{token}``) and
§23 (current GenAI semantic conventions emitted alongside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --------------------------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------------------------

SPAN_LLM_COMPLETION: Final = "llm.completion"
"""Root span of one LLM call (kind CLIENT)."""
SPAN_LLM_INFERENCE: Final = "llm.inference"
"""Optional child: the vendor round trip."""
SPAN_LLM_RESPONSE_PARSE: Final = "llm.response.parse"
"""Optional child: turning the vendor answer into the agent's data."""

LLM_SPAN_NAMES: Final = (SPAN_LLM_COMPLETION, SPAN_LLM_INFERENCE, SPAN_LLM_RESPONSE_PARSE)

# --------------------------------------------------------------------------------------------
# Span attributes required by the contract (design table "Required span attributes")
# --------------------------------------------------------------------------------------------

LLM_PROVIDER: Final = "llm.provider"
LLM_MODEL: Final = "llm.model"
LLM_REQUEST_TYPE: Final = "llm.request.type"
LLM_TOKENS_PROMPT: Final = "llm.tokens.prompt"
LLM_TOKENS_COMPLETION: Final = "llm.tokens.completion"
LLM_TOKENS_TOTAL: Final = "llm.tokens.total"
GEN_AI_SYSTEM: Final = "gen_ai.system"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"

REQUIRED_SPAN_ATTRIBUTES: Final[dict[str, type]] = {
    LLM_PROVIDER: str,
    LLM_MODEL: str,
    LLM_REQUEST_TYPE: str,
    LLM_TOKENS_PROMPT: int,
    LLM_TOKENS_COMPLETION: int,
    LLM_TOKENS_TOTAL: int,
    GEN_AI_SYSTEM: str,
    GEN_AI_REQUEST_MODEL: str,
}
"""Attribute name -> Python type every ``llm.completion`` span must carry."""

# Current GenAI semantic conventions, emitted alongside (NOTES §23) so other tools read our spans.
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""Opt-in only: prompt text is never captured unless the user turns capture on."""
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
"""Opt-in only: response text is never captured unless the user turns capture on."""
ERROR_TYPE: Final = "error.type"

SEMCONV_SPAN_ATTRIBUTES: Final[dict[str, type]] = {
    GEN_AI_OPERATION_NAME: str,
    GEN_AI_PROVIDER_NAME: str,
    GEN_AI_USAGE_INPUT_TOKENS: int,
    GEN_AI_USAGE_OUTPUT_TOKENS: int,
}
"""GenAI semconv attributes the SDK sets on every ``llm.completion`` span whose usage is known."""

# Token classes beyond prompt/completion (issue 9), set when the vendor reports them. Each is a
# SUBSET of prompt or completion (see TOKEN_DETAILS below): never added to them a second time.
LLM_TOKENS_CACHE_READ: Final = "llm.tokens.cache_read"
"""Input tokens served from the provider's prompt cache (part of ``llm.tokens.prompt``)."""
LLM_TOKENS_CACHE_CREATION: Final = "llm.tokens.cache_creation"
"""Input tokens written to the provider's prompt cache (part of ``llm.tokens.prompt``)."""
LLM_TOKENS_REASONING: Final = "llm.tokens.reasoning"
"""Output tokens spent on hidden reasoning (part of ``llm.tokens.completion``)."""
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"

# Cost (issue 10, docs/cost.md): set by the SDK from the price catalog shipped with the package when
# the model is priced; absent (never 0) for a model the catalog does not price.
LLM_COST_USD: Final = "llm.cost.usd"
"""USD of this call at the catalog's price in force when it ended."""
LLM_COST_CATALOG: Final = "llm.cost.catalog"
"""Version of the catalog that priced it (``sha256:`` + 12 hex of the catalog file)."""

# Where the token counts came from: the vendor's usage block, our estimate, or nowhere.
LLM_TOKENS_PROVENANCE: Final = "llm.tokens.provenance"
PROVENANCE_REPORTED: Final = "reported"
PROVENANCE_ESTIMATED: Final = "estimated"
PROVENANCE_UNAVAILABLE: Final = "unavailable"
PROVENANCE_VALUES: Final = (PROVENANCE_REPORTED, PROVENANCE_ESTIMATED, PROVENANCE_UNAVAILABLE)

REQUEST_TYPE_CHAT: Final = "chat"
REQUEST_TYPE_COMPLETION: Final = "completion"
REQUEST_TYPE_EMBEDDING: Final = "embedding"

# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

TOKEN_UNIT: Final = "{token}"
"""UCUM annotation: the collector's Prometheus exporter skips it, so no ``_token`` suffix (NOTES §1)."""


@dataclass(frozen=True)
class CounterSpec:
    """One contract counter: what the SDK creates and what Prometheus finally stores."""

    instrument: str
    unit: str
    description: str
    prometheus_name: str
    """The series name queried by the dashboard, after the collector and Prometheus relabelling."""

    @property
    def increment_record(self) -> str:
        """The accounting rollup of this counter: tokens accounted per evaluation step (docs/accounting.md)."""
        return f"{METRICS_NAMESPACE}:{self.instrument}:increment"


PROMPT_TOKENS: Final = CounterSpec(
    "prompt_tokens", TOKEN_UNIT, "Prompt (input) tokens billed by the LLM provider", "llm_prompt_tokens_total"
)
COMPLETION_TOKENS: Final = CounterSpec(
    "completion_tokens",
    TOKEN_UNIT,
    "Completion (output) tokens billed by the LLM provider",
    "llm_completion_tokens_total",
)
TOTAL_TOKENS: Final = CounterSpec("total_tokens", TOKEN_UNIT, "Prompt plus completion tokens", "llm_total_tokens_total")
TOKEN_COUNTERS: Final = (PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS)
"""The three counters every counted call adds to (the design's contract; verify and checks require them)."""

CACHE_READ_TOKENS: Final = CounterSpec(
    "cache_read_tokens",
    TOKEN_UNIT,
    "Prompt tokens read from the provider's prompt cache (included in prompt_tokens)",
    "llm_cache_read_tokens_total",
)
CACHE_CREATION_TOKENS: Final = CounterSpec(
    "cache_creation_tokens",
    TOKEN_UNIT,
    "Prompt tokens written to the provider's prompt cache (included in prompt_tokens)",
    "llm_cache_creation_tokens_total",
)
REASONING_TOKENS: Final = CounterSpec(
    "reasoning_tokens",
    TOKEN_UNIT,
    "Completion tokens spent on reasoning (included in completion_tokens)",
    "llm_reasoning_tokens_total",
)
TOKEN_DETAIL_COUNTERS: Final = (CACHE_READ_TOKENS, CACHE_CREATION_TOKENS, REASONING_TOKENS)
"""Counters added to only when the vendor reports the class (a reported 0 is added: it is a fact)."""
ALL_TOKEN_COUNTERS: Final = TOKEN_COUNTERS + TOKEN_DETAIL_COUNTERS
"""Every token class, in this order: prompt, completion, total, cache read, cache creation, reasoning."""


@dataclass(frozen=True)
class TokenDetail:
    """One token class that is a subset of prompt or completion: its counter, span names and parent."""

    counter: CounterSpec
    attribute: str
    """The contract's span attribute (``llm.tokens.*``)."""
    semconv_attribute: str
    """The GenAI semantic-convention span attribute (``gen_ai.usage.*``)."""
    part_of: CounterSpec
    """PROMPT_TOKENS or COMPLETION_TOKENS: the class this one is included in."""


TOKEN_DETAILS: Final = (
    TokenDetail(CACHE_READ_TOKENS, LLM_TOKENS_CACHE_READ, GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, PROMPT_TOKENS),
    TokenDetail(
        CACHE_CREATION_TOKENS, LLM_TOKENS_CACHE_CREATION, GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, PROMPT_TOKENS
    ),
    TokenDetail(REASONING_TOKENS, LLM_TOKENS_REASONING, GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, COMPLETION_TOKENS),
)
"""The one definition of token accounting (docs/instrumentation.md, "Token classes"):

* prompt = ALL input tokens the vendor billed, cached ones included. OpenAI's ``prompt_tokens``
  already includes ``prompt_tokens_details.cached_tokens``; Anthropic's ``input_tokens`` excludes
  the cache, so prompt = ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.
* completion = ALL output tokens, reasoning included (OpenAI's ``completion_tokens`` already
  includes ``completion_tokens_details.reasoning_tokens``).
* total = prompt + completion.
* cache read + cache creation <= prompt and reasoning <= completion: the detail classes are subsets,
  shown beside their parent, never added to it again. Uncached input = prompt - cache read -
  cache creation; visible output = completion - reasoning.
"""

REQUIRED_METRIC_ATTRIBUTES: Final = (LLM_MODEL, LLM_PROVIDER, GEN_AI_SYSTEM)

# Bounded metric labels (docs/accounting.md, "Series that scale"): counters carry a normalised model
# name, at most LLM_MODEL_LABEL_LIMIT distinct ones per process, further ones as the overflow value.
LLM_MODEL_LABEL_MAX_LENGTH: Final = 64
LLM_MODEL_LABEL_LIMIT: Final = 64
LLM_MODEL_OVERFLOW: Final = "_overflow_"
"""``llm.model`` on counters once a process has used more distinct models than the limit."""
"""Attributes every contract counter data point carries."""

METRICS_NAMESPACE: Final = "llm"
"""The collector's ``prometheus`` exporter namespace; ``amtp-obs check`` proves the config agrees."""

# Tempo 2.4.1 metrics-generator series (NOTES §4) and the labels the contract dimensions become.
SPANMETRICS_CALLS: Final = "traces_spanmetrics_calls_total"
SPANMETRICS_LATENCY_BUCKET: Final = "traces_spanmetrics_latency_bucket"
SPANMETRICS_LATENCY_SUM: Final = "traces_spanmetrics_latency_sum"
SPANMETRICS_LATENCY_COUNT: Final = "traces_spanmetrics_latency_count"
SPANMETRICS_SIZE: Final = "traces_spanmetrics_size_total"
TARGET_INFO: Final = "traces_target_info"
SERVICE_GRAPH_REQUEST_TOTAL: Final = "traces_service_graph_request_total"
SERVICE_GRAPH_REQUEST_FAILED_TOTAL: Final = "traces_service_graph_request_failed_total"
SERVICE_GRAPH_REQUEST_SERVER_SECONDS: Final = "traces_service_graph_request_server_seconds"
SERVICE_GRAPH_REQUEST_CLIENT_SECONDS: Final = "traces_service_graph_request_client_seconds"

SPANMETRICS_DIMENSIONS: Final = (LLM_MODEL, LLM_PROVIDER, GEN_AI_SYSTEM)
"""Span-metric dimensions configured in tempo.yaml (the intrinsics are Tempo's own labels)."""

# --------------------------------------------------------------------------------------------
# GitHub MCP instrumentation (not subject to the LLM contract)
# --------------------------------------------------------------------------------------------

MCP_SERVICE_NAME: Final = "amtp-github-mcp"
SPAN_REPO_TREE: Final = "repo.tree"
SPAN_REPO_READ_FILE: Final = "repo.read_file"
SPAN_GITHUB_API: Final = "github.api"
SPAN_VALKEY_GET: Final = "valkey.get"
SPAN_VALKEY_SET: Final = "valkey.set"
MCP_SPAN_NAMES: Final = (SPAN_REPO_TREE, SPAN_REPO_READ_FILE, SPAN_GITHUB_API, SPAN_VALKEY_GET, SPAN_VALKEY_SET)

MCP_TOOL: Final = "mcp.tool"
MCP_CACHE_HIT: Final = "mcp.cache_hit"
MCP_EXCLUSION_REASON: Final = "mcp.exclusion_reason"


@dataclass(frozen=True)
class HistogramSpec:
    instrument: str
    unit: str
    description: str


MCP_TOOL_DURATION: Final = HistogramSpec("mcp.tool.duration", "s", "Duration of one MCP tool call")
MCP_GITHUB_API_DURATION: Final = HistogramSpec(
    "mcp.github_api.duration", "s", "Duration of one GitHub API request made by the MCP server"
)
MCP_HISTOGRAMS: Final = (MCP_TOOL_DURATION, MCP_GITHUB_API_DURATION)

# Instrumentation scope names.
SCOPE_NAME: Final = "amtp_obs"

# --------------------------------------------------------------------------------------------
# Provider names and cache usage (used by amtp_obs.instrument)
# --------------------------------------------------------------------------------------------

PROVIDER_OPENAI: Final = "openai"
"""``llm.provider`` / ``gen_ai.system`` value of the OpenAI client instrumentation."""
PROVIDER_ANTHROPIC: Final = "anthropic"
"""``llm.provider`` / ``gen_ai.system`` value of the Anthropic client instrumentation."""


# --------------------------------------------------------------------------------------------
# Pipeline verification (apps/otel-verify/verify_trace.py; self-contained, so tests pin its
# literal names to these)
# --------------------------------------------------------------------------------------------

VERIFY_SERVICE_NAME: Final = "amtp-otel-verify"
"""service.name of verify_trace.py unless OTEL_SERVICE_NAME is set."""
VERIFY_RUN_ID: Final = "amtp.verify.run_id"
"""Resource attribute holding verify_trace.py's ``--run-id``, so concurrent runs are told apart."""
VERIFY_PROMPT_TOKENS: Final = 128
VERIFY_COMPLETION_TOKENS: Final = 64
VERIFY_MODEL: Final = "gpt-4o"
VERIFY_PROVIDER: Final = "openai"

# --------------------------------------------------------------------------------------------
# Validators (amtp_obs.contract.validate), re-exported lazily: importing the names stays cheap.
# --------------------------------------------------------------------------------------------


def __getattr__(name: str) -> object:
    if not name.startswith("_") and name != "validate":
        import importlib

        validate = importlib.import_module("amtp_obs.contract.validate")
        if name in validate.__all__:
            return getattr(validate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
