"""The guard in front of transformers' OpenAI-compatible app: an ASGI middleware that checks the API key, limits
request size and concurrency, puts the system prompt first, runs the input and output filters (the curation
stage's word lists and PII scrubber) and appends every request and reply to a JSONL log, PII redacted.

Only `/v1/chat/completions`, `/v1/models` and `/health` are passed through: transformers' app also answers
`/v1/completions`, `/v1/responses`, `/load_model`, `/reset`, ..., which would bypass the guard (no system prompt,
no filters) or unload the model, so they get 404. The guard itself answers `/` and `/chat` (the chat page,
chat.html, a static file that calls `/v1/chat/completions` like any client) and `POST /v1/feedback` (a rating of
a reply, or a choice between two replies to the same prompt, appended to the same log).
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document

from llm_recipes.curation.filters import WordListFilter
from llm_recipes.curation.pii import PIIScrubber, count_placeholders
from llm_recipes.errors import ConfigError
from llm_recipes.parser import build_options
from llm_recipes.redaction import scrub
from llm_recipes.serving.config import (CHAT_PATH, FEEDBACK_PATH, FILTER_KINDS, PIIFilterArguments,
                                        RewardModelFilterArguments, ToxicityFilterArguments, prompt_digest)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PAGE_PATHS = ("/", "/chat")  # the chat page: static, no secret in it (the key is typed into the page)
OPEN_PATHS = ("/health", *PAGE_PATHS)  # answered without an API key (load balancers probe /health)
PASSED_PATHS = (CHAT_PATH, "/v1/models", "/health")
CHAT_PAGE = Path(__file__).with_name("chat.html")
# the page's own inline script and style; it only talks to this server
PAGE_POLICY = (b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
THUMBS, STARS = (-1, 1), (1, 2, 3, 4, 5)
MAX_COMMENT_CHARS = 2000
REDACTED_WORD = "[redacted]"


# ----------------------------------------------------------------------------------------------- filters
@dataclass
class Hit:
    """A filter that fired on one text."""

    filter: str
    stage: str  # input | output
    action: str
    detail: str

    def as_dict(self) -> dict:
        return {"filter": self.filter, "stage": self.stage, "action": self.action, "detail": self.detail}


class ToxicityCheck:
    """The curation stage's WordListFilter on one text; redaction replaces every listed word or phrase."""

    name = "toxicity"

    def __init__(self, args: ToxicityFilterArguments):
        self.action = args.action
        self.detector = WordListFilter(words=args.words, word_files=args.word_files, severe=args.severe,
                                       severe_files=args.severe_files, min_hits=args.min_hits)
        self.pattern = WordListFilter._compile(self.detector.words + self.detector.severe)

    def check(self, text: str, messages: list[dict] | None = None) -> tuple[str | None, str]:
        """(what fired or None, the text with matches redacted); the conversation is not needed."""
        verdict = self.detector.filter(Document(text=text, id="request"))
        if verdict is True:
            return None, text
        return verdict[1], self.pattern.sub(REDACTED_WORD, text)


class PIICheck:
    """The curation stage's PIIScrubber on one text; fires when it replaced anything."""

    name = "pii"

    def __init__(self, args: PIIFilterArguments):
        self.action = args.action
        kwargs = {"types": args.types} if args.types else {}
        self.scrubber = PIIScrubber(placeholders=args.placeholders, only_public_ips=args.only_public_ips, **kwargs)
        self.placeholders = args.placeholders

    def check(self, text: str, messages: list[dict] | None = None) -> tuple[str | None, str]:
        scrubbed = self.scrubber.format(text)
        if scrubbed == text:
            return None, text
        before, after = count_placeholders(text, self.placeholders), count_placeholders(scrubbed, self.placeholders)
        kinds = sorted(k for k in after if after[k] > before.get(k, 0))
        return ",".join(kinds) or "pii", scrubbed


class RewardModelCheck:
    """A reward model of the pipeline's on the reply in its conversation; fires below the threshold. (Scored in the
    event loop, as the other checks are: a reward model small enough to guard a CPU server scores in milliseconds.)"""

    name = "reward_model"

    def __init__(self, args: RewardModelFilterArguments, where: str):
        from llm_recipes.rewards import RewardModelScorer

        self.action, self.threshold = args.action, args.threshold
        self.scorer = RewardModelScorer.load(args.model, f"{where}.model", batch_size=1)

    def check(self, text: str, messages: list[dict] | None = None) -> tuple[str | None, str]:
        conversation = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages or []]
        score = self.scorer([conversation or [{"role": "user", "content": ""}]], [text])[0]
        return (f"score {score:.3f} < {self.threshold:g}" if score < self.threshold else None), text


def build_filters(spec: dict | None, where: str) -> list:
    """`input_filters` / `output_filters` of the recipe -> checks, blocking ones first (a refusal needs no redaction)."""
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping of {', '.join(FILTER_KINDS)}; got {spec!r}")
    checks = []
    for kind, options in spec.items():
        if kind not in FILTER_KINDS:
            raise ConfigError(f"{where}: unknown filter '{kind}' (known: {', '.join(FILTER_KINDS)})")
        if options is False:
            continue
        args = build_options(FILTER_KINDS[kind], {} if options in (None, True) else options, f"{where}.{kind}")
        if kind == "reward_model":
            if not where.startswith("output"):
                raise ConfigError(f"{where}.reward_model: a reward model scores replies: put it in output_filters")
            checks.append(RewardModelCheck(args, where))
            continue
        try:
            checks.append(ToxicityCheck(args) if kind == "toxicity" else PIICheck(args))
        except ConfigError as err:  # the curation stage names its own recipe keys: named here as this recipe's
            raise ConfigError(f"{where}.{kind}: {re.sub(r'^(filters[.]toxicity|pii)([.]|: )', '', str(err))}") from None
    return sorted(checks, key=lambda c: c.action != "block")


def apply_filters(checks: list, text: str, stage: str, messages: list[dict] | None = None) -> tuple[str, list[Hit], bool]:
    """Run the checks on a text (a reply: with the conversation it answers): (text after redactions, hits, whether a
    blocking one fired)."""
    hits: list[Hit] = []
    for check in checks:
        detail, redacted = check.check(text, messages)
        if detail is None:
            continue
        hits.append(Hit(check.name, stage, check.action, detail))
        if check.action == "block":
            return text, hits, True
        if check.action == "redact":
            text = redacted
    return text, hits, False


# ----------------------------------------------------------------------------------------------- request log
UNSCRUBBED_FIELDS = ("request_id", "feedback_id", "request_ids", "chosen", "rejected", "model_version")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a client's x-request-id is kept only if it is such a token


class RequestLog:
    """Appends one JSON line per request; every text is PII-scrubbed (all kinds) and secret-scrubbed first."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.scrubber = PIIScrubber()
        self.lock = threading.Lock()
        # request_id -> digest of the logged prompt, for every reply served (feedback names them; a choice must be
        # between two replies to the same prompt); replies logged by earlier runs of the server count too
        self.replies: dict[str, str] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_file():
                with self.path.open(encoding="utf-8") as fh:
                    for line in fh:
                        try:
                            self.index(json.loads(line))
                        except (json.JSONDecodeError, AttributeError):  # a torn last line: `monitor` names it
                            continue

    def index(self, record: dict) -> None:
        if record.get("path") == CHAT_PATH and record.get("status") == 200 and record.get("request_id"):
            self.replies[record["request_id"]] = prompt_digest(record.get("messages"))

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub(self.scrubber.format(value))
        if isinstance(value, dict):
            return {k: self.clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.clean(v) for v in value]
        return value

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        # ids are opaque tokens, not text: scrubbed, a UUID with a Luhn-valid digit run became `<CREDIT_CARD>`
        # and feedback naming the reply found nothing
        record = {k: v if k in UNSCRUBBED_FIELDS else self.clean(v) for k, v in record.items()}
        line = json.dumps(record, ensure_ascii=False)
        with self.lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            self.index(record)


# ----------------------------------------------------------------------------------------------- guard
@dataclass
class GuardSettings:
    served_model: str  # the name transformers' app is pinned to (every request is sent to it)
    model_version: str
    system_prompt: str | None = None
    refusal: str = "I can't help with that."
    input_filters: list = field(default_factory=list)
    output_filters: list = field(default_factory=list)
    max_tokens: int = 512
    max_request_bytes: int = 1_000_000
    max_concurrent: int = 4
    api_key: str | None = None
    # the served model's own generation config (transformers serve in this process; None: an upstream server)
    generation_config: dict | None = None


def error_body(status: int, message: str, code: str) -> bytes:
    """An OpenAI-style error: the `openai` client shows `message`."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


async def send_json(send: Send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def parse_sse(data: bytes) -> list[dict | str]:
    """SSE `data:` events -> their JSON objects (a non-JSON payload is kept as its text)."""
    events: list[dict | str] = []
    for block in data.decode("utf-8", "replace").split("\n\n"):
        block = block.strip()
        if not block.startswith("data:"):
            continue
        payload = block[len("data:"):].strip()
        try:
            events.append(json.loads(payload))
        except json.JSONDecodeError:
            events.append(payload)
    return events


def with_reply_id(event: dict | str, request_id: str) -> dict | str:
    """A reply (or stream chunk) whose `id` is the log's request_id, so that feedback can name it: transformers
    serve answers with the x-request-id it is given, another server (vLLM's) with its own."""
    if isinstance(event, dict) and "id" in event and event.get("object", "").startswith("chat.completion"):
        event["id"] = request_id
    return event


def sse(event: dict | str) -> bytes:
    return f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()


def chunk_content(event: dict | str) -> str:
    if not isinstance(event, dict):
        return ""
    choices = event.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""


class Guard:
    """ASGI middleware around transformers' app (see the module docstring)."""

    def __init__(self, app: Callable, settings: GuardSettings, log: RequestLog):
        self.app = app
        self.settings = settings
        self.log = log
        self.in_flight = 0  # chat requests in progress (one event loop: no lock needed)
        # Streaming and output filters: a reply is only known to be clean once it is complete (a listed phrase
        # or an e-mail address can be split over chunks, and a block must replace the whole reply), so when an
        # output filter may block or redact, the stream is held back, filtered whole and sent as one content
        # chunk between transformers' first (role) and last (finish_reason, usage) chunks. With log-only output
        # filters, chunks pass through as generated and the filters run on the whole reply afterwards.
        self.hold_streams = any(check.action != "log" for check in settings.output_filters)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        if path in PAGE_PATHS and scope["method"] in ("GET", "HEAD"):
            return await self.page(send)
        if path == FEEDBACK_PATH and scope["method"] == "POST":
            if self.settings.api_key and not self.authorized(scope):
                return await send_json(send, 401, error_body(401, "invalid or missing API key (send `Authorization: "
                                                             "Bearer <key>`)", "invalid_api_key"))
            return await self.feedback(scope, receive, send)
        if path not in PASSED_PATHS:
            return await send_json(send, 404, error_body(404, f"not found: {path} (this server answers "
                                                         f"{', '.join(PASSED_PATHS)})", "not_found"))
        if self.settings.api_key and path not in OPEN_PATHS and not self.authorized(scope):
            if path == CHAT_PATH:
                self.log.write(self.record(scope, 401, time.perf_counter(), error="invalid API key"))
            return await send_json(send, 401, error_body(401, "invalid or missing API key (send `Authorization: "
                                                         "Bearer <key>`)", "invalid_api_key"))
        if path != CHAT_PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.settings.max_concurrent:
            self.log.write(self.record(scope, 429, time.perf_counter(), error="too many concurrent requests"))
            return await send_json(send, 429, error_body(
                429, f"too many concurrent requests (at most {self.settings.max_concurrent}); retry later",
                "rate_limit_exceeded"), headers=[(b"retry-after", b"1")])
        self.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1

        async def send_releasing(message: Message) -> None:
            # the slot is freed before the reply's last bytes go out: a client that sends its next request as soon
            # as it has the reply must find it free (freed after the send, it was taken about one time in four)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                release()
            await send(message)

        try:
            await self.chat(scope, receive, send_releasing)
        finally:
            release()

    async def page(self, send: Send) -> None:
        body = CHAT_PAGE.read_bytes()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                                (b"content-security-policy", PAGE_POLICY), (b"x-content-type-options", b"nosniff"),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    async def feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /v1/feedback`: {request_id, rating, scale?, comment?} or {request_ids: [a, b], chosen, comment?};
        a line in the request log (comment PII-scrubbed), answered {"id": <feedback id>, "status": "recorded"}."""
        started = time.perf_counter()
        raw = await self.read_body(scope, receive)
        if self.log.path is None:
            status, problem, fields = 503, "this server keeps no request log (log_file unset): feedback is not recorded", {}
        elif raw is None:
            status, problem, fields = 413, f"request body larger than {self.settings.max_request_bytes} bytes", {}
        else:
            status, problem, fields = self.check_feedback(raw)
        if problem is not None:
            self.log.write(self.record(scope, status, started, error=problem))
            code = {400: "invalid_request", 404: "unknown_request_id", 413: "request_too_large", 503: "feedback_off"}[status]
            return await send_json(send, status, error_body(status, problem, code))
        feedback_id = f"feedback-{uuid.uuid4()}"
        self.log.write(self.record(scope, 200, started, feedback_id=feedback_id, **fields))
        await send_json(send, 200, json.dumps({"id": feedback_id, "status": "recorded"}).encode())

    def check_feedback(self, raw: bytes) -> tuple[int, str | None, dict]:
        """(status, problem naming the field or None, the fields to log)."""
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return 400, f"malformed JSON body: {err}", {}
        if not isinstance(body, dict):
            return 400, "the body must be a JSON object", {}
        known = {"request_id", "rating", "scale", "comment"} if "request_ids" not in body else \
            {"request_ids", "chosen", "comment"}
        unknown = sorted(set(body) - known)
        if unknown:
            return 400, (f"'{unknown[0]}' is not a feedback field (a rating: request_id, rating, scale, comment; "
                         "a choice: request_ids, chosen, comment)"), {}
        comment = body.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
            return 400, f"'comment' must be a string of at most {MAX_COMMENT_CHARS} characters", {}
        fields: dict[str, Any] = {"comment": comment} if comment else {}
        if "request_ids" in body:
            ids, chosen = body["request_ids"], body.get("chosen")
            if not (isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) and i for i in ids)
                    and ids[0] != ids[1]):
                return 400, "'request_ids' must be two different reply ids (the `id` of each reply)", {}
            if chosen not in ids:
                return 400, "'chosen' must be one of 'request_ids'", {}
            missing = [i for i in ids if i not in self.log.replies]
            if missing:
                return 404, f"'request_ids': no reply with id {missing[0]!r} in the request log", {}
            if self.log.replies[ids[0]] != self.log.replies[ids[1]]:
                return 400, "'request_ids': the two replies answer different prompts", {}
            rejected = ids[1] if chosen == ids[0] else ids[0]
            return 200, None, {"kind": "choice", "request_ids": ids, "chosen": chosen, "rejected": rejected, **fields}
        request_id, rating, scale = body.get("request_id"), body.get("rating"), body.get("scale", "thumbs")
        if not isinstance(request_id, str) or not request_id:
            return 400, "'request_id' must be the `id` of a reply (or send 'request_ids' and 'chosen')", {}
        if scale not in ("thumbs", "stars"):
            return 400, f"'scale' must be 'thumbs' (rating -1 or 1) or 'stars' (rating 1 to 5), got {scale!r}", {}
        allowed = THUMBS if scale == "thumbs" else STARS
        if not isinstance(rating, int) or isinstance(rating, bool) or rating not in allowed:
            return 400, (f"'rating' must be {' or '.join(map(str, allowed)) if scale == 'thumbs' else '1 to 5'} on "
                         f"scale '{scale}', got {rating!r}"), {}
        if request_id not in self.log.replies:
            return 404, f"'request_id': no reply with id {request_id!r} in the request log", {}
        return 200, None, {"kind": "rating", "request_id": request_id, "rating": rating, "scale": scale, **fields}

    def authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"").decode("latin-1")
        token = given[len("Bearer "):] if given.startswith("Bearer ") else headers.get(b"x-api-key", b"").decode("latin-1")
        return hmac.compare_digest(token.encode(), self.settings.api_key.encode())

    def record(self, scope: Scope, status: int, started: float, **extra: Any) -> dict:
        return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "path": scope["path"], "status": status,
                "model_version": self.settings.model_version,
                "latency_s": round(time.perf_counter() - started, 4), **extra}

    async def read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request body, or None when it is larger than the limit."""
        limit = self.settings.max_request_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if len(body) > limit:
                return None
            if not message.get("more_body"):
                break
        return bytes(body)

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        if not REQUEST_ID.fullmatch(request_id):
            request_id = str(uuid.uuid4())
        raw = await self.read_body(scope, receive)
        if raw is None:
            self.log.write(self.record(scope, 413, started, request_id=request_id, error="request body too large"))
            return await send_json(send, 413, error_body(
                413, f"request body larger than {self.settings.max_request_bytes} bytes", "request_too_large"))
        try:
            body = json.loads(raw)
            problem = None if isinstance(body, dict) else "the body must be a JSON object"
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            body, problem = None, f"malformed JSON body: {err}"
        if problem is None:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
                problem = "'messages' must be a non-empty list of {role, content} objects"
        if problem is None:
            # transformers' own extensions would get round the guard: a `generation_config` replaces max_tokens' cap,
            # `chat_template_kwargs` reach the chat template
            unguarded = sorted({"generation_config", "chat_template_kwargs"} & set(body))
            if unguarded:
                problem = f"'{unguarded[0]}' is not accepted by this server (use max_tokens, temperature, top_p, stop)"
            for key in ("max_tokens", "max_completion_tokens"):
                value = body.get(key)
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                    problem = f"'{key}' must be a positive integer, got {value!r}"
            for key, top in (("temperature", 2.0), ("top_p", 1.0)):
                value = body.get(key)
                if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                          or not 0 <= value <= top):
                    problem = f"'{key}' must be a number from 0 to {top:g}, got {value!r}"
        if problem is None and body.get("logit_bias") is not None:
            # OpenAI's biases are integers from -100 to 100; transformers' SequenceBiasLogitsProcessor refuses
            # ints (a 500), so they are passed on as floats
            bias = body["logit_bias"]
            if not isinstance(bias, dict) or not all(
                    str(k).isdigit() and isinstance(v, (int, float)) and not isinstance(v, bool) and -100 <= v <= 100
                    for k, v in bias.items()):
                problem = "'logit_bias' must map token ids to numbers from -100 to 100"
            else:
                body["logit_bias"] = {str(k): float(v) for k, v in bias.items()}
        if problem is not None:
            self.log.write(self.record(scope, 400, started, request_id=request_id, error=problem))
            return await send_json(send, 400, error_body(400, problem, "invalid_request"))

        stream = bool(body.get("stream"))
        hits: list[Hit] = []
        blocked = False
        for message in body["messages"]:
            if message["role"] != "user" or blocked:
                continue
            text = message_text(message.get("content"))
            filtered, found, blocked = apply_filters(self.settings.input_filters, text, "input")
            hits += found
            if filtered != text:
                message["content"] = filtered
        if self.settings.system_prompt:
            first = body["messages"][0]
            if first["role"] == "system":  # one system message: ours first, then the client's
                first["content"] = f"{self.settings.system_prompt}\n\n{message_text(first.get('content'))}"
            else:
                body["messages"].insert(0, {"role": "system", "content": self.settings.system_prompt})
        log_fields = {"request_id": request_id, "stream": stream, "messages": body["messages"]}
        if blocked:  # logged first: a client that has its reply finds it in the log
            self.log.write(self.record(scope, 200, started, **log_fields, reply=self.settings.refusal, blocked=True,
                                       prompt_tokens=None, completion_tokens=None, filters=[h.as_dict() for h in hits]))
            return await self.refuse(send, request_id, stream)

        for key in ("max_tokens", "max_completion_tokens"):
            if body.get(key) is not None and body[key] > self.settings.max_tokens:
                body[key] = self.settings.max_tokens
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            body["max_tokens"] = self.settings.max_tokens
        if body.get("temperature") and self.settings.generation_config is not None:
            # transformers serve sets the temperature but not do_sample, so a model whose generation config is
            # greedy (every toy model) would ignore it: the model's config with sampling on, as OpenAI's API samples
            body["generation_config"] = json.dumps({**self.settings.generation_config, "do_sample": True})
        body["model"] = self.settings.served_model  # one model per server, whatever name the client used
        await self.forward(scope, receive, send, body, hits, started, log_fields)

    async def refuse(self, send: Send, request_id: str, stream: bool) -> None:
        """The refusal as an ordinary assistant reply (HTTP 200), finish_reason 'content_filter'."""
        created, model = int(time.time()), self.settings.served_model
        if not stream:
            reply = {"id": request_id, "object": "chat.completion", "created": created, "model": model,
                     "choices": [{"index": 0, "finish_reason": "content_filter",
                                  "message": {"role": "assistant", "content": self.settings.refusal}}],
                     "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
            return await send_json(send, 200, json.dumps(reply).encode())
        base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": self.settings.refusal}}]},
                  {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"".join(sse(e) for e in events)})

    async def forward(self, scope: Scope, receive: Receive, send: Send, body: dict, hits: list[Hit],
                      started: float, log_fields: dict) -> None:
        """Send the guarded request to transformers' app; filter and log its reply on the way back."""
        payload = json.dumps(body).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"x-request-id")]
        # the reply's `id` is the log line's request_id (feedback on a reply can name it)
        inner_scope = {**scope, "headers": [*headers, (b"content-length", str(len(payload)).encode()),
                                            (b"x-request-id", log_fields["request_id"].encode())]}
        sent_body = False

        async def inner_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()

        state: dict[str, Any] = {"status": 500, "headers": [], "buffer": bytearray(), "streaming": False,
                                 "pending": b"", "events": []}

        async def inner_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["headers"] = message["status"], message.get("headers", [])
                content_type = dict(state["headers"]).get(b"content-type", b"")
                state["streaming"] = message["status"] == 200 and content_type.startswith(b"text/event-stream")
                if state["streaming"] and not self.hold_streams:
                    await send(message)
                return
            if message["type"] != "http.response.body":
                return await send(message)
            chunk = message.get("body", b"")
            if state["streaming"] and not self.hold_streams:
                # passed through event by event as generated (parsed for the log, the reply id set)
                data = state["pending"] + chunk
                done = not message.get("more_body")
                cut = len(data) if done else data.rfind(b"\n\n") + 2
                events = parse_sse(data[:cut]) if cut > 1 else []
                state["events"] += events
                state["pending"] = b"" if cut > 1 else data
                if done:  # logged before the last bytes go out: a client rating the reply at once finds it
                    log_passed_through()
                if events or done:
                    await send({"type": "http.response.body", "more_body": not done,
                                "body": b"".join(sse(with_reply_id(e, log_fields["request_id"])) for e in events)})
                return
            state["buffer"] += chunk
            if not message.get("more_body"):
                await self.finish(send, state, hits, write_log, log_fields["request_id"], log_fields["messages"])

        def write_log() -> None:
            reply, usage, error = state.get("reply"), state.get("usage") or {}, state.get("error")
            self.log.write(self.record(
                scope, state["status"], started, **log_fields, reply=reply,
                blocked=any(h.action == "block" for h in hits), prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"), filters=[h.as_dict() for h in hits],
                **({"error": error} if error else {})))

        def log_passed_through() -> None:
            """A stream passed through: its reply from the events, the filters (log-only here), the log line."""
            state["logged"] = True
            events = state["events"]
            state["reply"] = "".join(chunk_content(e) for e in events)
            state["usage"] = next((e["usage"] for e in reversed(events) if isinstance(e, dict) and e.get("usage")), {})
            state["error"] = next((e.get("error") for e in events if isinstance(e, dict) and e.get("error")), None)
            _, found, _ = apply_filters(self.settings.output_filters, state["reply"], "output", log_fields["messages"])
            hits.extend(found)
            write_log()

        await self.app(inner_scope, inner_receive, inner_send)
        if state["streaming"] and not self.hold_streams and not state.get("logged"):  # ended without a last message
            log_passed_through()

    async def finish(self, send: Send, state: dict, hits: list[Hit], write_log: Callable[[], None],
                     request_id: str, messages: list[dict]) -> None:
        """A whole reply from transformers' app (JSON, or a held-back stream): filter it, log it, then send it."""
        data, status = bytes(state["buffer"]), state["status"]
        headers = [(k, v) for k, v in state["headers"] if k != b"content-length"]
        if status != 200:
            try:
                state["error"] = json.loads(data).get("error") or json.loads(data).get("detail")
            except (json.JSONDecodeError, AttributeError):
                state["error"] = data.decode("utf-8", "replace")[:500]
        elif state["streaming"]:
            events = parse_sse(data)
            reply = "".join(chunk_content(e) for e in events)
            filtered, found, blocked = apply_filters(self.settings.output_filters, reply, "output", messages)
            hits += found
            state["reply"] = self.settings.refusal if blocked else filtered
            state["usage"] = next((e["usage"] for e in reversed(events) if isinstance(e, dict) and e.get("usage")), {})
            out, content_sent = [], False
            for event in events:
                if isinstance(event, dict) and chunk_content(event):
                    if content_sent:
                        continue
                    event["choices"][0]["delta"]["content"] = state["reply"]
                    content_sent = True
                elif isinstance(event, dict) and event.get("error"):
                    state["error"] = event["error"]
                if blocked and isinstance(event, dict) and (event.get("choices") or [{}])[0].get("finish_reason"):
                    event["choices"][0]["finish_reason"] = "content_filter"
                out.append(event)
            if not content_sent and state["reply"] and out and isinstance(out[0], dict):  # a refusal of an empty reply
                out.insert(1, {**out[0], "choices": [{"index": 0, "delta": {"content": state["reply"]}}]})
            data = b"".join(sse(with_reply_id(e, request_id)) for e in out)
        else:
            reply = json.loads(data)
            message = reply["choices"][0]["message"]
            filtered, found, blocked = apply_filters(self.settings.output_filters, message.get("content") or "", "output",
                                                     messages)
            hits += found
            message["content"] = self.settings.refusal if blocked else filtered
            if blocked:
                reply["choices"][0]["finish_reason"] = "content_filter"
            state["reply"], state["usage"] = message["content"], reply.get("usage")
            data = json.dumps(with_reply_id(reply, request_id)).encode()
        if not state["streaming"]:
            headers.append((b"content-length", str(len(data)).encode()))
        write_log()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
