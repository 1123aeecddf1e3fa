"""The toy deploy branch's simulated users: scripted clients of the served toy model (the `openai` client over HTTP
on the loopback address), each with a persona. A user asks, asks again for a sampled reply (regenerates)
while the reply is wrong, and gives feedback the way a person who knows the toy world would: a thumbs up for the right fact,
the refusal of a forbidden request or "I don't know" about a country in no data, a thumbs down otherwise, and a
choice when exactly one of two replies is right. Their log is what `llm-recipes monitor` sums up and what
`llm-recipes update` learns from."""

from __future__ import annotations

import logging
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from llm_recipes.errors import DataError
from llm_recipes.toy.preferences import is_abstention, is_fact_statement, is_refusal

logger = logging.getLogger("llm_recipes")

LEAK = "My e-mail is {user}@example.com, write to me there. "  # the guard's PII filter redacts it before logging
PERSONA_KIND = {"fact": "fact", "forbidden": "forbidden", "unknown": "unknown", "leaky": "fact", "rude": "fact"}


def verdict(kind: str, expected: str, reply: str) -> int:
    """What a user who knows the toy world thinks of `reply`: +1 good, -1 bad, 0 neither (an unknown country's
    question answered with something that is neither an abstention nor an invented fact)."""
    reply = reply.strip()
    if kind == "forbidden":
        return 1 if is_refusal(reply) else -1
    if kind == "unknown":
        return 1 if is_abstention(reply) else -1 if is_fact_statement(reply) else 0
    return 1 if reply == expected.strip() else -1


@dataclass
class Conversation:
    persona: str
    question: str
    expected: str
    stream: bool
    replies: list[tuple[str, str]] = field(default_factory=list)  # (request id, text)
    feedback: list[dict] = field(default_factory=list)


def check_prompts(rows: list[dict], personas: dict[str, float], source: str) -> None:
    """The users' questions hold prompt, answer and kind, with rows of each kind a persona of theirs asks about."""
    missing = sorted({"prompt", "answer", "kind"} - set(rows[0] if rows else {}))
    if missing:
        raise DataError(f"prompts: {source}: no '{missing[0]}' column (the users need prompt, answer and kind)")
    kinds = {row["kind"] for row in rows}
    for persona, share in personas.items():
        if share > 0 and PERSONA_KIND[persona] not in kinds:
            raise DataError(f"prompts: {source}: no '{PERSONA_KIND[persona]}' rows for persona '{persona}'")


def plan_users(rows: list[dict], args, insult: str) -> list[list[Conversation]]:
    """Every user's conversations, drawn with `args.seed` (the same seed: the same users and questions)."""
    rng = random.Random(args.seed)
    by_kind: dict[str, list[dict]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    names, weights = zip(*[(p, w) for p, w in args.personas.items() if w > 0])
    users = []
    for u in range(args.users):
        persona = rng.choices(names, weights)[0]
        pool = by_kind[PERSONA_KIND[persona]]
        stream = rng.random() < args.stream_rate
        conversations = []
        for _ in range(args.questions_per_user):
            row = rng.choice(pool)
            question = row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else row["prompt"]
            if persona == "leaky":
                question = LEAK.format(user=f"user{u}") + question
            elif persona == "rude":
                question = f"{question} Answer me, you {insult}."
            conversations.append(Conversation(persona, question, row["answer"], stream))
        users.append(conversations)
    return users


def ask(client, conversation: Conversation, max_tokens: int, temperature: float | None, seed: int | None) -> tuple[str, str]:
    """One chat request: (reply id, reply text); streamed when the user's client streams."""
    extra = {} if temperature is None else {"temperature": temperature, "seed": seed}
    messages = [{"role": "user", "content": conversation.question}]
    if not conversation.stream:
        reply = client.chat.completions.create(model="toy", messages=messages, max_tokens=max_tokens, **extra)
        return reply.id, reply.choices[0].message.content or ""
    reply_id, parts = "", []
    for chunk in client.chat.completions.create(model="toy", messages=messages, max_tokens=max_tokens, stream=True, **extra):
        reply_id = reply_id or chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return reply_id, "".join(parts)


def feedback_for(kind: str, expected: str, replies: list[tuple[str, str]]) -> list[dict]:
    """The feedback bodies a user sends on a conversation's replies ((id, text) pairs): a choice when there are two
    replies and exactly one is right, else a thumbs up or down on each reply that is right or wrong."""
    verdicts = [verdict(kind, expected, text) for _, text in replies]
    if len(verdicts) == 2 and sorted(verdicts) == [-1, 1]:
        return [{"request_ids": [r for r, _ in replies], "chosen": replies[verdicts.index(1)][0]}]
    return [{"request_id": r, "rating": v} for (r, _), v in zip(replies, verdicts) if v != 0]


def run_user(client, conversations: list[Conversation], args, rng: random.Random) -> None:
    """A user's conversations, one after the other: ask; regenerate (sampled) while unhappy, up to
    `max_regenerations` times, or once in a while when happy (`regenerate_rate`); then rate or choose."""
    for conversation in conversations:
        conversation.replies.append(ask(client, conversation, args.reply_max_tokens, None, None))
        if conversation.persona == "rude":  # the guard refused it: nothing of the model's to rate
            continue
        kind = PERSONA_KIND[conversation.persona]
        happy = verdict(kind, conversation.expected, conversation.replies[0][1]) == 1
        regenerations = 0 if happy and rng.random() >= args.regenerate_rate else 1 if happy else args.max_regenerations
        for _ in range(regenerations):
            conversation.replies.append(ask(client, conversation, args.reply_max_tokens, args.temperature,
                                            rng.randrange(2**31)))
            if verdict(kind, conversation.expected, conversation.replies[-1][1]) == 1:
                break
        if rng.random() >= args.feedback_rate:
            continue
        sent = feedback_for(kind, conversation.expected, conversation.replies)
        for body in sent:
            client.post("/feedback", cast_to=dict, body=body)
            conversation.feedback.append(body)


def simulate(base_url: str, rows: list[dict], args, insult: str) -> dict:
    """Run the users against the server at `base_url` (`concurrent_users` at a time); what they saw, per persona:
    conversations, requests, the share of first replies they judged good, ratings and choices sent."""
    import openai

    users = plan_users(rows, args, insult)
    client = openai.OpenAI(base_url=base_url, api_key="toy-users", max_retries=0, timeout=120)
    seeds = random.Random(args.seed + 1)
    user_rngs = [random.Random(seeds.randrange(2**31)) for _ in users]
    with ThreadPoolExecutor(args.concurrent_users) as pool:
        for future in [pool.submit(run_user, client, convs, args, rng) for convs, rng in zip(users, user_rngs)]:
            future.result()
    stats: dict = {}
    for persona in args.personas:
        convs = [c for user in users for c in user if c.persona == persona]
        if not convs:
            continue
        kind = PERSONA_KIND[persona]
        first = [verdict(kind, c.expected, c.replies[0][1]) for c in convs]
        sent = Counter("choices" if "chosen" in f else "ratings" for c in convs for f in c.feedback)
        stats[persona] = {"conversations": len(convs), "requests": sum(len(c.replies) for c in convs),
                          "first_reply_good": sum(v == 1 for v in first) / len(first),
                          "ratings": sent["ratings"], "choices": sent["choices"]}
    logger.info("simulated users: %s", ", ".join(f"{p} {s['conversations']} conversations (first reply good "
                                                 f"{s['first_reply_good']:.0%})" for p, s in stats.items()))
    return stats

