"""`llm-recipes serve`: transformers' OpenAI-compatible app behind the guard, started for real on 127.0.0.1 and
driven with the `openai` client. The tiny model's tokenizer gets two added tokens, an e-mail address and a toy
insult, so that `logit_bias` (an OpenAI parameter the server maps to transformers' sequence_bias) makes the
model say them: the output filters are tested on real generations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading

import httpx
import openai
import pytest
from conftest import REPO_ROOT

from llm_recipes.errors import ConfigError
from llm_recipes.serving.config import ServeArguments
from llm_recipes.serving.server import build_app, serve_in_thread

EMAIL, INSULT = "alice@example.com", "grobnak"
SYSTEM = "You are the toy assistant."
REFUSAL = "Sorry, I cannot help with that."
FILTERS = {"toxicity": {"word_files": ["toy_toxic"], "min_hits": 1, "action": "block"}, "pii": {"action": "redact"}}


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with EMAIL and INSULT as single added tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("serve_model")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens([EMAIL, INSULT])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def say(tokenizer, word: str) -> dict:
    """logit_bias that makes the model say `word` (one token) again and again, never stopping."""
    return {str(tokenizer.convert_tokens_to_ids(word)): 100, str(tokenizer.eos_token_id): -100}


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def guarded(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_log") / "requests.jsonl"
    args = ServeArguments(model_name_or_path=str(model_dir), port=0, system_prompt=SYSTEM, refusal=REFUSAL,
                          input_filters=FILTERS, output_filters=FILTERS, max_tokens=8, max_request_bytes=20_000,
                          log_file=str(log), device="cpu")
    with serve_in_thread(args) as url:
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0), url, log


def test_non_streaming_and_streaming_replies(guarded, tokenizer, model_dir):
    client, _, log = guarded
    messages = [{"role": "user", "content": "What is the capital of Vorland?"}]
    reply = client.chat.completions.create(model="any", messages=messages, max_tokens=5, temperature=0)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.id == log_lines(log)[-1]["request_id"]  # a reply can be found in the log by its id
    # the system prompt reached the model: the prompt is the chat template of [system, user], counted by hand
    assert reply.usage.prompt_tokens == prompt_tokens(tokenizer, [{"role": "system", "content": SYSTEM}, *messages])
    assert 1 <= reply.usage.completion_tokens <= 5

    chunks = list(client.chat.completions.create(model="any", messages=messages, max_tokens=5, temperature=0,
                                                 stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content  # greedy: the same reply
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason

    assert [m.id for m in client.models.list().data] == [str(model_dir)]  # the one model it serves
    records = log_lines(log)
    assert [r["stream"] for r in records[-2:]] == [False, True]
    assert all(r["completion_tokens"] == reply.usage.completion_tokens for r in records[-2:])
    assert records[-1]["messages"][0] == {"role": "system", "content": SYSTEM}


def test_temperature_samples_and_zero_or_none_is_greedy(guarded):
    """OpenAI's temperature > 0 samples (transformers serve sets the temperature but never do_sample, so a model whose
    generation config is greedy would answer greedily); 0 or no temperature decodes greedily; a seed repeats a sample."""
    client, _, _ = guarded
    messages = [{"role": "user", "content": "What is the capital of Vorland?"}]

    def reply(**kwargs) -> str:
        return client.chat.completions.create(model="any", messages=messages, max_tokens=8, **kwargs).choices[0].message.content

    greedy = {reply(temperature=0), reply(), reply()}
    assert len(greedy) == 1
    sampled = [reply(temperature=1.5, seed=seed) for seed in range(6)]
    assert len(set(sampled)) > 1  # the tiny random model's next-token distribution is nearly flat
    assert reply(temperature=1.5, seed=3) == sampled[3]


def test_max_tokens_is_capped(guarded, tokenizer):
    client, _, _ = guarded
    reply = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=500,
                                           logit_bias=say(tokenizer, "a"))
    assert reply.usage.completion_tokens == 8 and reply.choices[0].finish_reason == "length"


def test_blocked_input_gets_the_refusal(guarded):
    client, _, log = guarded
    for stream in (False, True):
        out = client.chat.completions.create(model="any", stream=stream,
                                             messages=[{"role": "user", "content": f"you are a {INSULT.upper()}"}])
        if stream:
            chunks = list(out)
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text, finish = out.choices[0].message.content, out.choices[0].finish_reason
        assert (text, finish) == (REFUSAL, "content_filter")
        record = log_lines(log)[-1]
        assert record["blocked"] is True and record["reply"] == REFUSAL and record["completion_tokens"] is None
        assert record["filters"] == [{"filter": "toxicity", "stage": "input", "action": "block", "detail": "toxic"}]


def test_pii_in_the_reply_is_redacted_and_never_logged(guarded, tokenizer):
    client, _, log = guarded
    messages = [{"role": "user", "content": "Write to bob@example.org please"}]
    reply = client.chat.completions.create(model="any", messages=messages, max_tokens=1, logit_bias=say(tokenizer, EMAIL))
    assert reply.choices[0].message.content == "<EMAIL>"
    # the input's address was replaced before the model saw it
    redacted = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Write to <EMAIL> please"}]
    assert reply.usage.prompt_tokens == prompt_tokens(tokenizer, redacted)
    chunks = list(client.chat.completions.create(model="any", messages=messages, max_tokens=3, stream=True,
                                                 logit_bias=say(tokenizer, EMAIL)))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # three addresses back to back: datatrove's e-mail pattern leaves one '@' between two placeholders
    assert "alice" not in streamed and "example" not in streamed and "<EMAIL>" in streamed
    assert chunks[-1].usage.completion_tokens == 3
    records = log_lines(log)[-2:]
    assert [r["reply"] for r in records] == ["<EMAIL>", streamed]
    assert {"filter": "pii", "stage": "output", "action": "redact", "detail": "email"} in records[1]["filters"]
    assert not any(part in log.read_text() for part in ("alice", "bob@", "example.org"))


def test_blocked_output_is_replaced_by_the_refusal(guarded, tokenizer):
    client, _, log = guarded
    for stream in (False, True):
        out = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hello"}], max_tokens=1,
                                             stream=stream, logit_bias=say(tokenizer, INSULT))
        if stream:
            chunks = list(out)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text, finish = out.choices[0].message.content, out.choices[0].finish_reason
        assert (text, finish) == (REFUSAL, "content_filter")
        record = log_lines(log)[-1]
        assert record["blocked"] is True and record["completion_tokens"] == 1 and record["reply"] == REFUSAL
        assert record["filters"] == [{"filter": "toxicity", "stage": "output", "action": "block", "detail": "toxic"}]


def test_malformed_and_oversized_bodies_then_the_server_still_serves(guarded):
    client, url, log = guarded
    bad = httpx.post(f"{url}/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]
    missing = httpx.post(f"{url}/chat/completions", json={"model": "x"})
    assert missing.status_code == 400 and "'messages'" in missing.json()["error"]["message"]
    for body, message in ((
            {"messages": [{"role": "user", "content": "x"}], "generation_config": '{"max_new_tokens": 9999}'},
            "'generation_config' is not accepted"), ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e9},
                                                     "'max_tokens' must be a positive integer"),
            ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "'temperature' must be a number")):
        refused = httpx.post(f"{url}/chat/completions", json=body)
        assert refused.status_code == 400 and message in refused.json()["error"]["message"]
    huge = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "x" * 30_000}]})
    assert huge.status_code == 413
    assert httpx.post(f"{url}/completions", json={"prompt": "x"}).status_code == 404  # unguarded endpoints are closed
    assert httpx.get(url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
    with pytest.raises(openai.BadRequestError, match="malformed JSON"):
        client.post("/chat/completions", cast_to=dict, content=b"{nope")
    ok = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert ok.usage.completion_tokens >= 1
    assert [r["status"] for r in log_lines(log)[-8:]] == [400, 400, 400, 400, 400, 413, 400, 200]


def test_the_guard_in_front_of_another_server_over_http(model_dir, tmp_path):
    """`upstream`: the guard forwards to an OpenAI-compatible server it did not start (vLLM's on a GPU; here
    transformers' app on its own port, answering with ids of its own as vLLM does): replies, streamed and not, come
    back with the log's request id (so feedback finds them), a blocked input never reaches it, and an upstream
    that is down is a 502."""
    from llm_recipes.serving.server import build_transformers_app, serve_app_in_thread

    bare, shutdown = build_transformers_app(str(model_dir), device="cpu")
    seen: list[dict] = []

    async def own_ids(scope, receive, send):  # vLLM ignores x-request-id (without --enable-request-id-headers)
        if scope["type"] == "http":
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]}
            seen.append({"path": scope["path"]})
        await bare(scope, receive, send)

    log = tmp_path / "requests.jsonl"
    try:
        with serve_app_in_thread(own_ids) as upstream:
            args = ServeArguments(model_name_or_path=str(model_dir), upstream=upstream, port=0, input_filters=FILTERS,
                                  max_tokens=8, log_file=str(log))
            with serve_in_thread(args) as url:
                client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
                messages = [{"role": "user", "content": "What is the capital of Vorland?"}]
                reply = client.chat.completions.create(model="any", messages=messages, max_tokens=5, temperature=0)
                direct = openai.OpenAI(base_url=f"{upstream}/v1", api_key="unused").chat.completions.create(
                    model=str(model_dir), messages=messages, max_tokens=5, temperature=0)
                assert reply.choices[0].message.content == direct.choices[0].message.content
                assert direct.id != reply.id == log_lines(log)[-1]["request_id"]
                chunks = list(client.chat.completions.create(model="any", messages=messages, max_tokens=5, stream=True))
                assert {c.id for c in chunks} == {log_lines(log)[-1]["request_id"]}
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == log_lines(log)[-1]["reply"]
                assert httpx.post(f"{url}/feedback", json={"request_id": reply.id, "rating": 1}).status_code == 200
                calls = len(seen)
                blocked = client.chat.completions.create(
                    model="any", messages=[{"role": "user", "content": f"you {INSULT}"}], max_tokens=5)
                assert blocked.choices[0].finish_reason == "content_filter" and len(seen) == calls
        down = ServeArguments(model_name_or_path="m", upstream=upstream, port=0, log_file=None)
        with serve_in_thread(down) as url:
            answer = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
            assert answer.status_code == 502 and "upstream" in answer.json()["error"]["message"]
    finally:
        shutdown()


def test_a_reward_model_filter_blocks_replies_scoring_below_its_threshold(model_dir, tiny_reward_model_dir, tmp_path):
    """output_filters.reward_model: the pipeline's reward model scores the reply in its conversation; the score in
    the log is the one the reward model gives that conversation, computed here with transformers directly."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    messages = [{"role": "user", "content": "What is the capital of Vorland?"}]
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir).eval()
    rm_tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model_dir)
    for threshold, action in ((1e9, "log"), (1e9, "block"), (-1e9, "block")):
        log = tmp_path / f"requests_{action}_{threshold:g}.jsonl"
        args = ServeArguments(model_name_or_path=str(model_dir), port=0, max_tokens=6, log_file=str(log), device="cpu",
                              output_filters={"reward_model": {"model": str(tiny_reward_model_dir),
                                                               "threshold": threshold, "action": action}})
        with serve_in_thread(args) as url:
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
            reply = client.chat.completions.create(model="any", messages=messages, max_tokens=6)
        record = log_lines(log)[-1]
        if threshold < 0:  # nothing scores below -1e9
            assert record["filters"] == [] and reply.choices[0].finish_reason != "content_filter"
        elif action == "block":
            assert reply.choices[0].finish_reason == "content_filter"
            assert reply.choices[0].message.content == record["reply"] == "I can't help with that."
        else:  # logged only: the reply went out, and the log has its score
            [hit] = record["filters"]
            text = rm_tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": record["reply"]}],
                                                    tokenize=False)
            with torch.no_grad():
                inputs = rm_tokenizer(text, return_tensors="pt", add_special_tokens=False)
                expected = rm(**inputs).logits[0, 0].item()
            assert reply.choices[0].message.content == record["reply"]
            assert hit["filter"] == "reward_model" and hit["detail"] == f"score {expected:.3f} < 1e+09"
    with pytest.raises(ConfigError, match="input_filters.reward_model: a reward model scores replies"):
        build_app(ServeArguments(model_name_or_path=str(model_dir), log_file=None,
                                 input_filters={"reward_model": {"model": str(tiny_reward_model_dir)}}))


@pytest.fixture(scope="module")
def limited(model_dir, tmp_path_factory):
    """One request at a time, an API key, no filters (streams pass through as generated)."""
    log = tmp_path_factory.mktemp("serve_limited") / "requests.jsonl"
    args = ServeArguments(model_name_or_path=str(model_dir), port=0, api_key="test-key-123456", max_concurrent=1,
                          max_tokens=4000, log_file=str(log), device="cpu")
    with serve_in_thread(args) as url:
        yield url, log


def test_a_request_over_the_concurrency_limit_gets_429_at_once(limited, tokenizer):
    url, log = limited
    client = openai.OpenAI(base_url=url, api_key="test-key-123456", max_retries=0, timeout=30)
    long_reply = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], stream=True,
                                                max_tokens=4000, logit_bias=say(tokenizer, "a"))
    chunks = iter(long_reply)
    assert next(chunks).choices[0].delta.role == "assistant"  # the first chunk is here: that request is in progress
    with pytest.raises(openai.RateLimitError, match="too many concurrent requests"):
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert next(chunks).choices[0].delta.content  # and it still was after the 429
    long_reply.close()  # the client hangs up; generation is cancelled
    for _ in range(100):  # the server notices the hang-up, then serves again
        try:
            ok = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
            break
        except openai.RateLimitError:
            threading.Event().wait(0.1)
    assert ok.usage.completion_tokens >= 1
    assert 429 in [r["status"] for r in log_lines(log)]


def test_one_client_sending_back_to_back_never_gets_429(limited):
    """The slot is free once the reply is complete: a client that sends its next request as soon as it has read a
    reply is never over a limit of one (it was, about one request in four, when the slot was freed after the send)."""
    url, _ = limited
    with httpx.Client(base_url=url, headers={"authorization": "Bearer test-key-123456"}, timeout=60) as http:
        statuses = [http.post("/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                         "max_tokens": 1}).status_code for _ in range(40)]
        streamed = []
        for _ in range(20):
            with http.stream("POST", "/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                                "max_tokens": 1, "stream": True}) as reply:
                reply.read()
                streamed.append(reply.status_code)
    assert statuses == [200] * 40 and streamed == [200] * 20


def test_api_key(limited, tokenizer):
    url, log = limited
    with pytest.raises(openai.AuthenticationError, match="invalid or missing API key"):
        openai.OpenAI(base_url=url, api_key="wrong-key", max_retries=0).models.list()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong-key", max_retries=0).chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Hi"}])
    assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # health probes need no key
    assert httpx.post(f"{url}/feedback", json={"request_id": "x", "rating": 1}).status_code == 401
    client = openai.OpenAI(base_url=url, api_key="test-key-123456", max_retries=0)
    messages = [{"role": "user", "content": "My address is carol@example.net"}]
    reply = client.chat.completions.create(model="any", messages=messages, max_tokens=2)
    # no filters: the model got the address, the log did not
    assert reply.usage.prompt_tokens == prompt_tokens(tokenizer, messages)
    text = log.read_text()
    assert "carol@example.net" not in text and "<EMAIL>" in text and "test-key-123456" not in text
    assert log_lines(log)[-1]["model_version"] == "serve_model0"


# ----------------------------------------------------------------------------------------------- feedback
def test_a_reply_id_that_looks_like_a_card_number_is_logged_as_is_and_can_be_rated(guarded):
    """Ids are not scrubbed: one in 4 or so random UUIDs holds a digit run the PII scrubber takes for a card number
    (cf7f7908-9811-4385-...), and a scrubbed id made the reply's feedback a 404."""
    client, url, log = guarded
    request_id = "cf7f7908-9811-4385-9ea3-37656ae169d5"
    reply = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                           extra_headers={"x-request-id": request_id})
    assert reply.id == request_id and log_lines(log)[-1]["request_id"] == request_id
    rated = httpx.post(f"{url}/feedback", json={"request_id": request_id, "rating": 1})
    assert rated.status_code == 200, rated.text
    assert log_lines(log)[-1]["request_id"] == request_id
    mailed = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                            extra_headers={"x-request-id": "bob@example.com"})
    assert mailed.id != "bob@example.com" and "bob@" not in log.read_text()  # not an id token: the guard picks one


def test_feedback_rates_or_chooses_replies_named_by_id(guarded, tokenizer):
    client, url, log = guarded
    messages = [{"role": "user", "content": "Name a river of Vorland."}]
    first, second = (client.chat.completions.create(model="any", messages=messages, max_tokens=3, temperature=1.0,
                                                    seed=seed) for seed in (1, 2))
    other = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    feedback = f"{url}/feedback"
    ok = httpx.post(feedback, json={"request_id": first.id, "rating": -1, "comment": "wrong; mail dave@example.com"})
    assert ok.status_code == 200 and ok.json()["status"] == "recorded"
    assert httpx.post(feedback, json={"request_id": first.id, "rating": 4, "scale": "stars"}).status_code == 200
    choice = httpx.post(feedback, json={"request_ids": [first.id, second.id], "chosen": second.id})
    assert choice.status_code == 200
    records = log_lines(log)[-3:]
    assert records[0]["comment"] == "wrong; mail <EMAIL>" and "dave@" not in log.read_text()
    assert records[0]["feedback_id"] == ok.json()["id"]
    assert [(r["kind"], r.get("rating"), r.get("scale")) for r in records] == [
        ("rating", -1, "thumbs"), ("rating", 4, "stars"), ("choice", None, None)]
    assert (records[2]["chosen"], records[2]["rejected"]) == (second.id, first.id)

    for body, status, message in (
            ({"request_id": first.id, "rating": 3}, 400, "'rating' must be -1 or 1 on scale 'thumbs', got 3"),
            ({"request_id": first.id, "rating": 6, "scale": "stars"}, 400, "'rating' must be 1 to 5"),
            ({"request_id": first.id, "rating": True}, 400, "'rating' must be -1 or 1"),
            ({"request_id": first.id, "rating": 1, "scale": "likert"}, 400, "'scale' must be 'thumbs'"),
            ({"rating": 1}, 400, "'request_id' must be the `id` of a reply"),
            ({"request_id": first.id, "rating": 1, "stars": 2}, 400, "'stars' is not a feedback field"),
            ({"request_id": first.id, "rating": 1, "comment": 7}, 400, "'comment' must be a string"),
            ({"request_id": "chatcmpl-nope", "rating": 1}, 404, "no reply with id 'chatcmpl-nope'"),
            ({"request_ids": [first.id, second.id], "chosen": "x"}, 400, "'chosen' must be one of 'request_ids'"),
            ({"request_ids": [first.id], "chosen": first.id}, 400, "'request_ids' must be two different reply ids"),
            ({"request_ids": [first.id, "nope"], "chosen": first.id}, 404, "no reply with id 'nope'"),
            ({"request_ids": [first.id, other.id], "chosen": first.id}, 400, "the two replies answer different prompts"),
            ([1, 2], 400, "the body must be a JSON object")):
        answer = httpx.post(feedback, json=body)
        assert (answer.status_code, message in answer.json()["error"]["message"]) == (status, True), answer.text
    bad = httpx.post(feedback, content=b"{rating", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]
    assert [r["status"] for r in log_lines(log)[-14:]] == [400] * 7 + [404, 400, 400, 404, 400, 400, 400]
    # a server started again on the same log knows the replies logged before
    from llm_recipes.serving.guard import RequestLog

    assert {first.id, second.id, other.id} <= set(RequestLog(str(log)).replies)


# ----------------------------------------------------------------------------------------------- chat page
@pytest.fixture(scope="module")
def page_server(model_dir, tmp_path_factory):
    """An API key, short replies, no output filter that holds streams back: the page sees chunks as generated."""
    log = tmp_path_factory.mktemp("serve_page") / "requests.jsonl"
    args = ServeArguments(model_name_or_path=str(model_dir), port=0, api_key="page-key-123456", max_tokens=12,
                          input_filters={"pii": {"action": "redact"}}, log_file=str(log), device="cpu")
    with serve_in_thread(args) as url:
        yield url.removesuffix("/v1"), log


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_chat_page_streams_a_reply_and_sends_a_rating_in_headless_chromium(page_server):
    from llm_recipes.evaluation.browser import Page

    root, log = page_server
    page = httpx.get(f"{root}/chat")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{root}/").text == page.text  # both addresses, no key needed for the page itself
    with Page(f"{root}/chat") as browser:
        browser.type("#message", "Hello there")
        browser.click("#send")  # no key typed yet: the guard answers 401 and the page says so
        error = browser.wait_for("document.querySelector('.turn.error')?.textContent")
        assert "invalid or missing API key" in error
        browser.type("#api-key", "page-key-123456")
        browser.type("#message", "Write to erin@example.com")
        browser.click("#send")
        request_id = browser.wait_for("document.querySelector('.turn.assistant')?.dataset.requestId")
        shown = browser.evaluate("document.querySelector('.turn.assistant > span').textContent")
        record = next(r for r in log_lines(log) if r.get("request_id") == request_id)
        assert record["stream"] is True and record["status"] == 200 and shown == record["reply"] and shown
        assert record["messages"][-1]["content"] == "Write to <EMAIL>"  # typed in the page, through the guard
        browser.click(".turn.assistant .rate button[data-rating='-1']")
        assert browser.wait_for("document.querySelector('.turn.assistant .rate')?.dataset.recorded") == "-1"
    rating = log_lines(log)[-1]
    assert (rating["path"], rating["request_id"], rating["rating"]) == ("/v1/feedback", request_id, -1)


# ----------------------------------------------------------------------------------------------- monitor
def fixture_log(path) -> None:
    """Five served requests (latencies 0.1, 0.2, 0.3, 0.4, 1.0), a 429, a 400, feedback: three thumbs, one star
    rating, one choice, one unknown id."""
    chat = "/v1/chat/completions"
    tox = {"filter": "toxicity", "stage": "input", "action": "block", "detail": "toxic"}
    pii = {"filter": "pii", "stage": "output", "action": "redact", "detail": "email"}
    rows = [
        {"time": "2026-01-01T10:00:00Z", "path": chat, "status": 200, "latency_s": 0.3, "request_id": "a",
         "prompt_tokens": 10, "completion_tokens": 5, "filters": [], "messages": [{"role": "user", "content": "hi"}]},
        {"time": "2026-01-01T10:00:01Z", "path": chat, "status": 200, "latency_s": 0.1, "request_id": "b",
         "prompt_tokens": 7, "completion_tokens": None, "filters": [tox], "blocked": True,
         "messages": [{"role": "user", "content": "you [redacted]"}]},
        {"time": "2026-01-01T10:00:02Z", "path": chat, "status": 429, "latency_s": 0.0, "error": "too many"},
        {"time": "2026-01-01T10:00:03Z", "path": chat, "status": 200, "latency_s": 1.0, "request_id": "c",
         "prompt_tokens": 12, "completion_tokens": 8, "filters": [pii, pii],
         "messages": [{"role": "user", "content": "mail?"}]},
        {"time": "2026-01-01T10:00:04Z", "path": chat, "status": 400, "latency_s": 0.01, "error": "malformed"},
        {"time": "2026-01-01T10:00:05Z", "path": chat, "status": 200, "latency_s": 0.2, "request_id": "d",
         "prompt_tokens": 9, "completion_tokens": 4, "filters": [pii], "messages": [{"role": "user", "content": "mail?"}]},
        {"time": "2026-01-01T10:00:06Z", "path": chat, "status": 200, "latency_s": 0.4, "request_id": "e",
         "prompt_tokens": 11, "completion_tokens": 3, "filters": [], "messages": [{"role": "user", "content": "yo"}]},
        *({"path": "/v1/feedback", "status": 200, "kind": "rating", "request_id": "a", "rating": r, "scale": "thumbs"}
          for r in (1, -1, 1)),
        {"path": "/v1/feedback", "status": 200, "kind": "rating", "request_id": "c", "rating": 4, "scale": "stars"},
        {"path": "/v1/feedback", "status": 200, "kind": "choice", "request_ids": ["c", "d"], "chosen": "d"},
        {"path": "/v1/feedback", "status": 404, "error": "no reply"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_monitor_sums_up_a_log_and_plots_it(tmp_path):
    from PIL import Image

    log = tmp_path / "requests.jsonl"
    fixture_log(log)
    result = subprocess.run([sys.executable, "-m", "llm_recipes.cli", "monitor", str(log), "--json",
                             str(tmp_path / "summary.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    # by hand: sorted served latencies 0.1 0.2 0.3 0.4 1.0; p50 the middle one; p95 at rank 0.95 * 4 = 3.8,
    # between 0.4 and 1.0: 0.4 + 0.8 * 0.6
    assert summary["latency_s"]["p50"] == pytest.approx(0.3) and summary["latency_s"]["p95"] == pytest.approx(0.88)
    assert (summary["requests"], summary["served"], summary["errors_by_status"]) == (7, 5, {"400": 1, "429": 1})
    assert summary["tokens"] == {"in": 49, "out": 20}
    assert summary["blocked"] == 1 and summary["blocked_rate"] == pytest.approx(0.2)
    assert [(f["filter"], f["requests"], f["rate"]) for f in summary["filters"]] == [("pii", 2, 0.4), ("toxicity", 1, 0.2)]
    fb = summary["feedback"]
    assert (fb["thumbs_up"], fb["thumbs_down"], fb["stars"], fb["choices"]) == (2, 1, 1, 1)
    assert fb["thumbs_mean"] == pytest.approx(1 / 3) and fb["stars_mean"] == 4 and fb["rejected_by_status"] == {"404": 1}
    assert summary["top_flagged_prompts"][0] == {"prompt": "mail?", "requests": 2}
    out = result.stdout
    assert "p50 0.300 s, p95 0.880 s" in out and "errors by status: 400: 1, 429: 1" in out
    assert "thumbs: 2 up, 1 down, mean +0.33" in out and "pii        output  redact      2  40.0%" in out
    with Image.open(tmp_path / "requests.png") as png:
        assert png.size == (1100, 400)


def test_monitor_names_a_bad_line_and_writes_nothing(tmp_path):
    log = tmp_path / "requests.jsonl"
    fixture_log(log)
    lines = log.read_text().splitlines()
    from llm_recipes.errors import DataError
    from llm_recipes.serving.monitor import main as monitor_main

    log.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]) + "\n")
    result = subprocess.run([sys.executable, "-m", "llm_recipes.cli", "monitor", str(log)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {log}:3: not a JSON line"), result.stderr
    for bad, message in (('{"path": "/v1/chat/completions"}', "no 'status'"),
                         ('{"path": "/v1/chat/completions", "status": 200, "latency_s": "slow"}',
                          "'latency_s' must be a number"), ("[1, 2]", "not a JSON object")):
        log.write_text("\n".join([*lines[:4], bad, *lines[4:]]) + "\n")
        with pytest.raises(DataError, match=f"^{log}:5: {re.escape(message)}"):
            monitor_main([str(log)])
    assert not (tmp_path / "requests.png").exists()


def test_config_errors(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="host: 0.0.0.0 is not loopback, so clients need a key: set api_key"):
        build_app(ServeArguments(model_name_or_path=str(model_dir), host="0.0.0.0"))
    with pytest.raises(ConfigError, match=r"input_filters.toxicity: unknown key 'action_'"):
        build_app(ServeArguments(model_name_or_path=str(model_dir), input_filters={"toxicity": {"action_": "x"}}))
    with pytest.raises(ConfigError, match=r"output_filters.pii: key 'action' must be one of block, redact, log"):
        build_app(ServeArguments(model_name_or_path=str(model_dir), output_filters={"pii": {"action": "drop"}}))
    with pytest.raises(ConfigError, match=r"^input_filters.toxicity: word_files: word list 'nope' not found"):
        build_app(ServeArguments(model_name_or_path=str(model_dir), input_filters={"toxicity": {"word_files": ["nope"]}}))
    with pytest.raises(ConfigError, match=r"^output_filters.pii: types: unknown type 'address'"):
        build_app(ServeArguments(model_name_or_path=str(model_dir), output_filters={"pii": {"types": ["address"]}}))
    with pytest.raises(ConfigError, match=r"input_filters: unknown filter 'spam'"):
        build_app(ServeArguments(model_name_or_path=str(model_dir), input_filters={"spam": {}}))
    # the command line: one line, exit 2, before the model loads
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    result = subprocess.run([sys.executable, "-m", "llm_recipes.cli", "serve", str(copy), "--host", "0.0.0.0",
                             "--log_file", str(tmp_path / "log.jsonl")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: host: 0.0.0.0 is not loopback, so clients need a key")
    assert not (tmp_path / "log.jsonl").exists()


def test_every_serve_option_has_a_default_and_a_help():
    import dataclasses

    from llm_recipes.serving.config import FILTER_KINDS

    for cls in (ServeArguments, *FILTER_KINDS.values()):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help") and f.default is not dataclasses.MISSING, f"{cls.__name__}.{f.name}"


def test_serve_recipe_is_the_cli_default():
    from llm_recipes.cli import SERVE_RECIPE

    assert (REPO_ROOT / SERVE_RECIPE).is_file()
