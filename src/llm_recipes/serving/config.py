"""Serving behind a guard: `ServeArguments` (read by `llm_recipes.serving.server`) and the guard's filters
(`ToxicityFilterArguments`, `PIIFilterArguments`, built from the recipe by `llm_recipes.parser.build_options`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("block", "redact", "log")
CHAT_PATH = "/v1/chat/completions"
FEEDBACK_PATH = "/v1/feedback"  # ratings and choices, written to the request log (`llm-recipes monitor` reads both)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def prompt_digest(messages: Any) -> str:
    """What makes two logged replies answers to the same prompt (a choice needs it; the update step pairs ratings
    by it): the digest of the logged messages."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"key 'action' must be one of {', '.join(ACTIONS)}, got {action!r}")


@dataclass
class ServeArguments:
    """Serve a model over an OpenAI-compatible HTTP API with a guard in front (`scripts/serve.py`)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model to serve: a release folder (runs/toy/release) or a Hub id."}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on; any other than loopback needs api_key."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    api_key: str | None = field(
        default=None, metadata={"help": "Clients must send `Authorization: Bearer <api_key>`. Off by default on "
                                "127.0.0.1; required when host is another interface. Or set LLM_RECIPES_API_KEY."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message put before every conversation (before the client's own)."}
    )
    refusal: str = field(
        default="I can't help with that.",
        metadata={"help": "The assistant's reply when a filter with action 'block' fires (HTTP 200, "
                  "finish_reason 'content_filter')."},
    )
    input_filters: dict | None = field(
        default=None,
        metadata={"help": "Filters on the client's messages, each with action block|redact|log: "
                  "{toxicity: {words, word_files, severe, severe_files, min_hits, action}, "
                  "pii: {types, placeholders, only_public_ips, action}} (the curation stage's detectors)."},
    )
    output_filters: dict | None = field(
        default=None,
        metadata={"help": "Filters on the model's reply, same keys as input_filters. With block or redact a streamed "
                  "reply is held back until it is complete (a word or an e-mail can span chunks)."},
    )
    max_tokens: int = field(default=512, metadata={"help": "Cap on a reply's tokens (a request asking more gets this)."})
    max_request_bytes: int = field(
        default=1_000_000, metadata={"help": "Largest request body; a larger one gets HTTP 413."}
    )
    max_concurrent: int = field(
        default=4, metadata={"help": "Chat requests in progress at once; one more gets HTTP 429 at once."}
    )
    log_file: str | None = field(
        default="runs/serve/requests.jsonl",
        metadata={"help": "JSONL request log, one line per request (PII redacted); unset: no log."},
    )
    model_version: str | None = field(
        default=None, metadata={"help": "Version written in the log; unset: from the release folder's "
                                "llm_recipes.json (<folder>@<config hash>), else the folder name or Hub id."}
    )
    upstream: str | None = field(
        default=None,
        metadata={"help": "Guard another OpenAI-compatible server instead of loading the model here, e.g. vLLM's "
                  "(`vllm serve MODEL --port 8001`): its base URL, http://127.0.0.1:8001; model_name_or_path is then "
                  "the model name that server serves (see recipes/serve/serve_vllm.yaml)."},
    )
    upstream_timeout: float = field(default=600.0, metadata={"help": "Seconds to wait for the upstream server's reply."})
    device: str = field(default="auto", metadata={"help": "Device of the model: auto, cpu, cuda, cuda:0."})
    dtype: str = field(default="auto", metadata={"help": "dtype of the model: auto (as saved), float32, bfloat16, float16."})
    log_level: str = field(
        default="warning", metadata={"help": "uvicorn's log level.", "choices": ["critical", "error", "warning", "info", "debug"]}
    )


@dataclass
class ToxicityFilterArguments:
    """`toxicity:` of input_filters/output_filters: the curation stage's word lists (WordListFilter)."""

    words: list[str] | None = field(default=None, metadata={"help": "Listed words or phrases (whole words)."})
    word_files: list[str] | None = field(
        default=None, metadata={"help": "Word-list files, or names of lists shipped in llm_recipes/curation/wordlists/."}
    )
    severe: list[str] | None = field(default=None, metadata={"help": "Entries of which one match fires."})
    severe_files: list[str] | None = field(default=None, metadata={"help": "Word-list files of severe entries."})
    min_hits: int = field(default=1, metadata={"help": "Matches of `words` that fire the filter."})
    action: str = field(default="block", metadata={"help": "block (refusal), redact (matches replaced) or log."})

    def __post_init__(self) -> None:
        _check_action(self.action)
        if self.min_hits < 1:
            raise ValueError(f"key 'min_hits' must be >= 1, got {self.min_hits!r}")


@dataclass
class PIIFilterArguments:
    """`pii:` of input_filters/output_filters: the curation stage's PII scrubber (PIIScrubber)."""

    types: list[str] | None = field(
        default=None, metadata={"help": "Kinds detected: email, ip, ipv6, phone, credit_card, national_id (unset: all)."}
    )
    placeholders: dict[str, str] | None = field(default=None, metadata={"help": "Placeholder per kind, over the defaults."})
    only_public_ips: bool = field(default=True, metadata={"help": "Leave private and reserved IP addresses."})
    action: str = field(default="redact", metadata={"help": "redact (placeholders), block (refusal) or log."})

    def __post_init__(self) -> None:
        _check_action(self.action)


@dataclass
class RewardModelFilterArguments:
    """`reward_model:` of output_filters: a reward model the pipeline trained (scripts/reward.py) scores each reply in
    its conversation; a reply scoring below `threshold` fires."""

    model: str = field(default=None, metadata={"help": "The reward model: folder (runs/toy/reward) or Hub id."})
    threshold: float = field(default=0.0, metadata={"help": "Replies scoring below this fire the filter."})
    action: str = field(default="block", metadata={"help": "block (refusal) or log."})

    def __post_init__(self) -> None:
        if self.action not in ("block", "log"):
            raise ValueError(f"key 'action' must be block or log (a score cannot redact), got {self.action!r}")
        if not self.model:
            raise ValueError("key 'model' must name the reward model (e.g. runs/toy/reward)")


FILTER_KINDS = {"toxicity": ToxicityFilterArguments, "pii": PIIFilterArguments,
                "reward_model": RewardModelFilterArguments}
