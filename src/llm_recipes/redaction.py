"""Secrets (Hub tokens, API keys, passwords) stay in the process: they are redacted from model cards, completion
markers, logs and saved training arguments, so nothing written to an output folder, and nothing pushed, holds one.

A value is secret when its name says so (`hub_token`, `HF_TOKEN`, `WANDB_API_KEY`, `db_password`, `client_secret`:
any name with a word `token`, `key`, `secret`, `password`, ...), when it is the value of such an environment
variable or of a recipe's `env:` entry, or when it has the shape of a Hub token (`hf_` and 30+ characters).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"

# not "pwd": the shell's PWD/OLDPWD hold the working directory, which would then be scrubbed from every path
SECRET_WORDS = frozenset({"token", "key", "secret", "secrets", "password", "passwd", "apikey", "credential",
                          "credentials", "auth", "passphrase"})
# names with such a word that hold no secret: a tokenizer's special tokens, a source's column names, per-token figures
_NOT_SECRET = re.compile(
    r"(^|_)(pad|eos|bos|unk|sep|cls|mask|stop|end|start|im_start|im_end|special|per|text|id|date|url|sort|column|"
    r"cache|dedup|hash|label|prompt|chosen|rejected|completion|messages)_(token|key)$"
)
# Hub user/org tokens are `hf_` + 34 characters; OpenAI-style keys `sk-...`
_TOKEN_SHAPES = re.compile(r"\b(hf_[A-Za-z0-9]{30,}|api_org_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_\-]{20,})\b")
_MIN_SECRET_LENGTH = 6  # shorter values ("1", "yes") are not replaced wherever they occur in a text
_registered: set[str] = set()


def is_secret_name(name: str) -> bool:
    """Whether a key or variable named so holds a secret (`hub_token`, `HF_TOKEN`, `openai_api_key`)."""
    lowered = str(name).lower()
    if _NOT_SECRET.search(lowered):
        return False
    words = set(re.split(r"[^a-z0-9]+", lowered))
    return bool(words & SECRET_WORDS) or any(w in lowered for w in ("password", "secret", "apikey", "api_key"))


def register(value: Any) -> None:
    """Remember a secret value, so that it is scrubbed from every text written or logged by this process."""
    if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH:
        _registered.add(value)


def secret_values() -> set[str]:
    """Registered secrets and the values of the environment's secret-named variables (HF_TOKEN, ...)."""
    from_env = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET_LENGTH}
    return _registered | from_env


def scrub(text: str, values: Iterable[str] | None = None) -> str:
    """`text` with every known secret value and every token-shaped string replaced by <redacted>."""
    for value in sorted(secret_values() if values is None else values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return _TOKEN_SHAPES.sub(REDACTED, text)


_VALUE = r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,{}\[\]#\n][^\s,}\]#\n]*)"""
# `key: value`, `KEY=value`, JSON `"key": "value"`, and command lines' `--key value` / `--key=value`
_ASSIGNMENT = re.compile(r"""(?P<key>[A-Za-z_][\w.\-]*)["']?\s*[:=][ \t]*""" + _VALUE)
_FLAG = re.compile(r"--(?P<key>[A-Za-z_][\w.\-]*)[ \t]+" + _VALUE)
_NOT_A_VALUE = {"null", "~", "none", "true", "false", "|", ">", "{", "[", '""', "''"}


def redact_text(text: str) -> str:
    """A recipe, card or log text with secrets redacted: the value of every secret-named key (`hub_token: ...`,
    `HF_TOKEN=...`, `--hub_token ...`, JSON `"key": "..."`), then every known secret value anywhere."""

    def replace(match: re.Match) -> str:
        key, value = match.group("key"), match.group("value")
        if not is_secret_name(key) or value.lower() in _NOT_A_VALUE or value.startswith(("{", "[", "|", ">")):
            return match.group(0)
        quote = value[0] if value[0] in "\"'" and value[-1] == value[0] and len(value) > 1 else ""
        return match.group(0)[: match.start("value") - match.start()] + f"{quote}{REDACTED}{quote}"

    return scrub(_FLAG.sub(replace, _ASSIGNMENT.sub(replace, text)))


def redact(obj: Any) -> Any:
    """A copy of a mapping/list/string with secret-named entries and known secret values redacted."""
    if isinstance(obj, dict):  # a secret is a string: numbers under such names are figures (mean_token_accuracy)
        return {k: REDACTED if is_secret_name(k) and isinstance(obj[k], str) and obj[k] else redact(obj[k])
                for k in obj}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return scrub(obj)
    return obj


def hide_secret_arguments(*parsed: Any) -> None:
    """Take secrets out of parsed stage arguments before anything can save them: Trainer pickles its arguments into
    `training_args.bin` (output folder and every checkpoint, both pushed). `hub_token` moves to the environment's
    HF_TOKEN, where huggingface_hub reads it for every push; other secret-named values are registered for scrubbing."""
    for args in parsed:
        for name, value in list(vars(args).items()) if hasattr(args, "__dict__") else []:
            if not is_secret_name(name) or not isinstance(value, str) or not value:
                continue
            register(value)
            if name == "hub_token":
                os.environ["HF_TOKEN"] = value
                setattr(args, name, None)


class _ScrubbingRecordFactory:
    """Log records with secrets scrubbed from the formatted message (whatever logger or library emits them)."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, *args, **kwargs):
        record = self.factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's own business
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record


def scrub_logs() -> None:
    """Scrub known secrets from every log record of this process (installed once)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _ScrubbingRecordFactory):
        logging.setLogRecordFactory(_ScrubbingRecordFactory(factory))
