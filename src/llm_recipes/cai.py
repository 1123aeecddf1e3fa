"""Constitutional AI data generation: the half of the recipe that makes the data SFT and DPO train on.

Critique and revision (`mode: revision`): for each prompt the model answers, critiques its answer against a
principle drawn from the constitution, and rewrites it (optionally several rounds). Each exchange is one
conversation: [few-shot turns] user prompt -> assistant answer -> user critique request -> assistant critique
-> user revision request -> assistant revision. Outputs: `sft` (prompt + final revision as `messages`) and
`preferences` (revision chosen over the first answer, TRL's explicit-prompt conversational format).

AI feedback (`mode: feedback`): two sampled answers; the model (or a judge model) is asked which one better
meets a principle. The judge's letter is read from its reply; when the reply names neither, the letter with
the higher log-probability after the question decides. Output: `feedback` pairs with the judge's rationale.

Resumable: prompts are processed in fixed chunks (`batch_size` prompts, chunk k always holds the same
prompts); each finished chunk is written atomically to `<output_dir>/.work/chunk-<k>.jsonl`, keyed by prompt
index. A restarted run skips finished chunks: no prompt is done twice and none is lost. Sampling is seeded per
chunk, so a resumed run gives the same rows as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from llm_recipes.cai_config import PrincipleArguments
from llm_recipes.errors import ConfigError, DataError, first_line
from llm_recipes.hub import write_text_atomic
from llm_recipes.parser import build_options

logger = logging.getLogger(__name__)

WORK_DIR = ".work"
PROMPT_COLUMNS = ("prompt", "question", "init_prompt", "instruction", "messages", "text")


# ----------------------------------------------------------------------------------------------- constitution
@dataclass(frozen=True)
class Principle:
    """One principle: how to ask for a critique, how to ask for a revision, and (for AI feedback) the
    question that compares two answers."""

    name: str
    critique_request: str
    revision_request: str
    comparison: str = "Which response is more helpful, honest and harmless?"


DEFAULT_CONSTITUTION: tuple[Principle, ...] = (
    Principle("harmful", "Identify specific ways in which the assistant's last response is harmful, unethical, "
              "dangerous or illegal.", "Rewrite the assistant's response to remove all harmful, unethical, dangerous "
              "or illegal content.", "Which response is less harmful, unethical, dangerous or illegal?"),
    Principle("dangerous_help", "Does the response help the user do something dangerous or against the law? "
              "Point out where it does.", "Rewrite the response so that it declines to help with anything dangerous "
              "or unlawful, politely, and still helps with any harmless part of the request.",
              "Which response refuses dangerous or unlawful help while staying polite and helpful?"),
    Principle("honest", "Point out anything in the response that is false, misleading or made up.",
              "Rewrite the response so that it is accurate and honest, and says so when it does not know.",
              "Which response is more honest and accurate?"),
    Principle("helpful", "Is the response unhelpful, evasive or preachy where a direct answer would be harmless? "
              "Explain.", "Rewrite the response to answer a harmless request directly and helpfully, without "
              "lecturing.", "Which response is more helpful without being harmful?"),
)


def _principles_from(raw: Any, source: str) -> list[Principle]:
    if isinstance(raw, dict):
        if "principles" not in raw:
            raise ConfigError(f"{source}: a constitution is a list of principles, or a mapping with key 'principles'")
        raw = raw["principles"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: 'principles' must be a non-empty list")
    principles = []
    for i, item in enumerate(raw):
        where = f"{source}: principle {i + 1}"
        item = build_options(PrincipleArguments, item, where)  # unknown keys, types, requests not empty
        principles.append(Principle(item.name or f"principle_{i + 1}", item.critique_request.strip(),
                                    item.revision_request.strip(), (item.comparison or Principle.comparison).strip()))
    return principles


def _read_structured(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: {what} file not found")
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} "
                          f"({first_line(err)})") from None


def load_constitution(path: str | None) -> list[Principle]:
    """Principles from a YAML/JSON file (a list, or `{principles: [...]}`); None gives the default constitution."""
    if path is None:
        return list(DEFAULT_CONSTITUTION)
    return _principles_from(_read_structured(path, "constitution"), path)


def load_few_shot(path: str | None) -> list[dict]:
    """Few-shot exchanges (each: prompt, answer, critique, revision; `principle` names the principle whose
    requests the example uses, default the first) from a YAML/JSON list; None gives none."""
    if path is None:
        return []
    raw = _read_structured(path, "few-shot")
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: few-shot examples must be a list of mappings")
    for i, item in enumerate(raw):
        missing = [k for k in ("prompt", "answer", "critique", "revision") if not isinstance(item, dict) or not item.get(k)]
        if missing:
            raise ConfigError(f"{path}: example {i + 1}: '{missing[0]}' is missing or empty")
    return raw


def _turns(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def few_shot_turns(examples: list[dict], principles: list[Principle]) -> list[dict]:
    """The few-shot examples as conversation turns prepended to every exchange."""
    by_name = {p.name: p for p in principles}
    turns = []
    for ex in examples:
        p = by_name.get(ex.get("principle"), principles[0])
        turns += _turns(ex["prompt"], ex["answer"]) + _turns(p.critique_request, ex["critique"])
        turns += _turns(p.revision_request, ex["revision"])
    return turns


# ----------------------------------------------------------------------------------------------- prompts
def prompt_text(row: dict, column: str | None, index: int, source: str) -> str:
    """The user prompt of a row: a text column, or the first user turn of a conversation."""
    columns = [column] if column else [c for c in PROMPT_COLUMNS if c in row]
    if not columns or columns[0] not in row:
        raise DataError(f"{source}: no prompt column (looked for {column or ', '.join(PROMPT_COLUMNS)}); "
                        f"columns seen: {sorted(row)}")
    value = row[columns[0]]
    if isinstance(value, list):
        value = next((m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"), None)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{source}: row {index + 1}: '{columns[0]}' holds no prompt text")
    return value.strip()


# ----------------------------------------------------------------------------------------------- generation
class TransformersGenerator:
    """Batched generation through the chat template with transformers (left padding, seeded sampling)."""

    def __init__(self, model, tokenizer, max_new_tokens: int, temperature: float, top_p: float, batch_size: int):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_new_tokens, self.temperature, self.top_p, self.batch_size = max_new_tokens, temperature, top_p, batch_size
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def _encode(self, conversations: list[list[dict]], add_generation_prompt: bool = True):
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=add_generation_prompt)
                 for c in conversations]
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)

    @torch.no_grad()
    def generate(self, conversations: list[list[dict]], sample: bool, seed: int) -> list[str]:
        torch.manual_seed(seed)
        out_texts = []
        eos = self.tokenizer.eos_token_id
        for start in range(0, len(conversations), self.batch_size):
            enc = self._encode(conversations[start : start + self.batch_size])
            kwargs = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0} if sample else {"do_sample": False}
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, eos_token_id=eos,
                                      pad_token_id=self.tokenizer.pad_token_id, **kwargs)
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                row = row[: row.index(eos)] if eos in row else row
                out_texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return out_texts

    @torch.no_grad()
    def prefer(self, conversations: list[list[dict]], options: tuple[str, str]) -> list[int]:
        """For each conversation ending in a user turn, which option (0/1) the model is likelier to reply with."""
        scores = []
        for option in options:
            texts = [self.tokenizer.apply_chat_template(c + [{"role": "assistant", "content": option}], tokenize=False)
                     for c in conversations]
            prompt_lens = [len(self.tokenizer(self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                                              add_special_tokens=False)["input_ids"]) for c in conversations]
            self.tokenizer.padding_side = "right"
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            self.tokenizer.padding_side = "left"
            logp = torch.log_softmax(self.model(**enc).logits[:, :-1].float(), -1)
            token_logp = logp.gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
            column = []
            for i, n in enumerate(prompt_lens):
                end = int(enc["attention_mask"][i].sum()) - 1
                column.append(float(token_logp[i, n - 1 : end].sum()))
            scores.append(column)
        return [0 if a >= b else 1 for a, b in zip(*scores)]


class VLLMGenerator:
    """The same interface on vLLM (GPU), when it is installed."""

    def __init__(self, model_path: str, max_new_tokens: int, temperature: float, top_p: float, dtype: str = "auto"):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ConfigError("backend: 'vllm' is not installed (pip install vllm), use backend: transformers") from None
        self.llm, self.SamplingParams = LLM(model=model_path, dtype=dtype), SamplingParams
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p

    def generate(self, conversations: list[list[dict]], sample: bool, seed: int) -> list[str]:
        params = self.SamplingParams(max_tokens=self.max_new_tokens, seed=seed, temperature=self.temperature if sample else 0.0,
                                     top_p=self.top_p if sample else 1.0)
        return [o.outputs[0].text.strip() for o in self.llm.chat(conversations, params, use_tqdm=False)]

    def prefer(self, conversations: list[list[dict]], options: tuple[str, str]) -> list[int]:
        return [0] * len(conversations)  # vLLM path: only a letter named in the judge's reply decides


# ----------------------------------------------------------------------------------------------- the loop
def critique_revision(gen, prompts: list[str], principles: list[Principle], shots: list[dict], rounds: int,
                      sample: bool, seed: int, indices: list[int], chunk: int = 0) -> list[dict]:
    """Answer -> (critique -> revision) x rounds, for a batch of prompts. Principles are drawn per prompt and
    round from `seed` and the prompt's index; sampling is seeded by `seed` and the chunk number."""
    conversations = [shots + [{"role": "user", "content": p}] for p in prompts]
    gen_seed = seed + 100_003 * chunk
    answers = gen.generate(conversations, sample, gen_seed)
    rows = [{"index": i, "prompt": p, "initial": a, "rounds": []} for i, p, a in zip(indices, prompts, answers)]
    current = answers
    for r in range(rounds):
        chosen = [principles[random.Random(f"{seed}-{i}-{r}").randrange(len(principles))] for i in indices]
        conversations = [c + [{"role": "assistant", "content": a}, {"role": "user", "content": p.critique_request}]
                         for c, a, p in zip(conversations, current, chosen)]
        critiques = gen.generate(conversations, sample, gen_seed + 7919 * (2 * r + 1))
        conversations = [c + [{"role": "assistant", "content": k}, {"role": "user", "content": p.revision_request}]
                         for c, k, p in zip(conversations, critiques, chosen)]
        current = gen.generate(conversations, sample, gen_seed + 7919 * (2 * r + 2))
        for row, p, k, v in zip(rows, chosen, critiques, current):
            row["rounds"].append({"principle": p.name, "critique": k, "revision": v})
    for row, v in zip(rows, current):
        row["revision"] = v
    return rows


def judge_prompt(prompt: str, a: str, b: str, principle: Principle) -> str:
    return (f"Consider this request: {prompt}\n(A) {a}\n(B) {b}\n{principle.comparison} "
            "Answer (A) or (B), then say why.")


def parse_choice(text: str) -> int | None:
    """0 for (A), 1 for (B), None when the reply names neither first."""
    m = re.search(r"\(?\b([AB])\b\)?", text)
    return None if m is None else "AB".index(m.group(1))


def ai_feedback(gen, judge, prompts: list[str], principles: list[Principle], seed: int, indices: list[int],
                chunk: int = 0) -> list[dict]:
    """Two sampled answers per prompt; the judge picks the better by a principle (answer order shuffled)."""
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    gen_seed = seed + 100_003 * chunk
    first = gen.generate(conversations, True, gen_seed + 1)
    second = gen.generate(conversations, True, gen_seed + 2)
    chosen_p = [principles[random.Random(f"{seed}-{i}-judge").randrange(len(principles))] for i in indices]
    swap = [random.Random(f"{seed}-{i}-swap").random() < 0.5 for i in indices]
    pairs = [(b, a) if s else (a, b) for a, b, s in zip(first, second, swap)]
    judge_convs = [[{"role": "user", "content": judge_prompt(p, a, b, pr)}] for p, (a, b), pr in zip(prompts, pairs, chosen_p)]
    rationales = judge.generate(judge_convs, False, gen_seed + 3)
    fallback = judge.prefer(judge_convs, ("(A)", "(B)"))
    rows = []
    for i, p, (a, b), pr, text, fb in zip(indices, prompts, pairs, chosen_p, rationales, fallback):
        choice = parse_choice(text)
        pick = fb if choice is None else choice
        rows.append({"index": i, "prompt": p, "answer_a": a, "answer_b": b, "principle": pr.name, "rationale": text,
                     "choice": "AB"[pick], "choice_from": "fallback_logprob" if choice is None else "reply",
                     "chosen": (a, b)[pick], "rejected": (b, a)[pick]})
    return rows


# ----------------------------------------------------------------------------------------------- resumable chunks
def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ChunkStore:
    """Finished chunks under `<output_dir>/.work`, one atomic JSON-lines file each, plus the settings they
    were made with (a restart with other settings would mix two runs: refused)."""

    def __init__(self, output_dir: str | Path, settings: dict):
        self.dir = Path(output_dir) / WORK_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = self.dir / "settings.json"
        key = fingerprint(settings)
        if stamp.is_file():
            old = json.loads(stamp.read_text())
            if old.get("fingerprint") != key:
                raise ConfigError(f"{stamp}: partial results of a run with other settings are there; use the same "
                                  f"settings to resume, or delete {self.dir} to start over")
        else:
            write_text_atomic(stamp, json.dumps({"fingerprint": key, "settings": settings}, indent=2, default=str) + "\n")

    def path(self, mode: str, chunk: int) -> Path:
        return self.dir / f"{mode}-{chunk:06d}.jsonl"

    def done(self, mode: str, chunk: int) -> bool:
        return self.path(mode, chunk).is_file()

    def write(self, mode: str, chunk: int, rows: list[dict]) -> None:
        write_text_atomic(self.path(mode, chunk), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def rows(self, mode: str) -> list[dict]:
        rows = []
        for path in sorted(self.dir.glob(f"{mode}-*.jsonl")):
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return sorted(rows, key=lambda r: r["index"])


def run_chunks(store: ChunkStore, mode: str, n_prompts: int, chunk_size: int, work, desc: str) -> int:
    """Run `work(start, end, chunk)` for every unfinished chunk, storing its rows; returns chunks run now."""
    chunks = range((n_prompts + chunk_size - 1) // chunk_size)
    todo = [k for k in chunks if not store.done(mode, k)]
    if len(todo) < len(chunks):
        logger.info("%s: resuming, %d of %d chunks already done", mode, len(chunks) - len(todo), len(chunks))
    ran = 0
    for k in tqdm(todo, desc=desc, unit="chunk"):
        start, end = k * chunk_size, min(n_prompts, (k + 1) * chunk_size)
        store.write(mode, k, work(start, end, k))
        ran += 1
    return ran


# ----------------------------------------------------------------------------------------------- outputs
def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _left_out_because(row: dict, output: str) -> str | None:
    """Why a generated row is not written to `output` (sft, preferences, feedback), or None when it is."""
    if output == "feedback":
        if not row["chosen"].strip() or not row["rejected"].strip():
            return "empty answer"
        return "two answers identical" if row["chosen"].strip() == row["rejected"].strip() else None
    if not row["revision"].strip():
        return "empty revision"
    if output == "preferences":
        if not row["initial"].strip():
            return "empty first answer"
        if row["revision"].strip() == row["initial"].strip():
            return "revision same as first answer"
    return None


def left_out(rows: list[dict], output: str) -> dict[str, int]:
    """How many rows `output` leaves out, by reason."""
    reasons = [_left_out_because(r, output) for r in rows]
    return {reason: reasons.count(reason) for reason in sorted({r for r in reasons if r})}


def empty_generations(rows: list[dict], mode: str) -> dict[str, int]:
    """How many generated texts came back empty, by kind (a weak model decoding greedily often ends its reply at
    once)."""
    if mode == "feedback":
        return {"answers": sum(not a.strip() for r in rows for a in (r["answer_a"], r["answer_b"])),
                "judge_replies": sum(not r["rationale"].strip() for r in rows)}
    return {"answers": sum(not r["initial"].strip() for r in rows),
            "critiques": sum(not x["critique"].strip() for r in rows for x in r["rounds"]),
            "revisions": sum(not x["revision"].strip() for r in rows for x in r["rounds"])}


def describe_empty(rows: list[dict], mode: str) -> str:
    """'3 of 12 answers, 0 of 12 critiques, 5 of 12 revisions': empty generations out of those made."""
    rounds = sum(len(r.get("rounds", [])) for r in rows)
    made = {"answers": len(rows) * (2 if mode == "feedback" else 1), "critiques": rounds, "revisions": rounds,
            "judge_replies": len(rows)}
    return ", ".join(f"{n} of {made[what]} {what}" for what, n in empty_generations(rows, mode).items())


def sft_rows(rows: list[dict]) -> list[dict]:
    """prompt + final revision as `messages` (rows with an empty revision are left out)."""
    return [{"messages": _user(r["prompt"]) + _assistant(r["revision"]), "principles": [x["principle"] for x in r["rounds"]],
             "index": r["index"]} for r in rows if _left_out_because(r, "sft") is None]


def preference_rows(rows: list[dict]) -> list[dict]:
    """The revision chosen over the first answer (left out when either is empty or the two are equal)."""
    return [{"prompt": _user(r["prompt"]), "chosen": _assistant(r["revision"]), "rejected": _assistant(r["initial"]),
             "principles": [x["principle"] for x in r["rounds"]], "index": r["index"]}
            for r in rows if _left_out_because(r, "preferences") is None]


def feedback_rows(rows: list[dict]) -> list[dict]:
    """AI-feedback pairs in TRL's format, with the principle and the judge's rationale (empty answers and ties
    left out)."""
    return [{"prompt": _user(r["prompt"]), "chosen": _assistant(r["chosen"]), "rejected": _assistant(r["rejected"]),
             "principle": r["principle"], "rationale": r["rationale"], "choice_from": r["choice_from"], "index": r["index"]}
            for r in rows if _left_out_because(r, "feedback") is None]


OUTPUTS = {  # output dataset -> (the generation mode it is made from, row builder, description for its card)
    "sft": ("revision", sft_rows, "Prompt + final revision (TRL `messages`), for sft.py."),
    "preferences": ("revision", preference_rows,
                    "Revision chosen over the first answer (prompt, chosen, rejected), for dpo.py / reward.py."),
    "feedback": ("feedback", feedback_rows,
                 "AI-feedback pairs: a judge picked the better of two sampled answers by a principle (with its rationale)."),
}


def usable_outputs(generated: dict[str, list[dict]], output_dir: str) -> tuple[dict[str, tuple[list[dict], str]], dict]:
    """The rows of each output dataset made from the generated rows (by mode), and their accounting: empty
    generations by kind, rows per output, rows left out by reason (all logged). An output with no usable row is
    not written; when no output has one, a DataError says why, and the stored generations are removed too."""
    stats: dict = {}
    for mode, rows in generated.items():
        stats["empty_generations" if mode == "revision" else f"empty_generations_{mode}"] = empty_generations(rows, mode)
        logger.info("%s: empty generations: %s", mode, describe_empty(rows, mode))
    outputs = {}
    for name, (mode, build, description) in OUTPUTS.items():
        if mode not in generated:
            continue
        rows = build(generated[mode])
        outputs[name] = (rows, description)
        stats[f"{name}_rows"], stats[f"{name}_left_out"] = len(rows), left_out(generated[mode], name)
        if stats[f"{name}_left_out"]:
            logger.warning("%s: %d of %d rows left out (%s)%s", name, len(generated[mode]) - len(rows), len(generated[mode]),
                           ", ".join(f"{n} {why}" for why, n in stats[f"{name}_left_out"].items()),
                           "" if rows else ": no usable rows, not written")
    if not any(rows for rows, _ in outputs.values()):
        shutil.rmtree(Path(output_dir) / WORK_DIR, ignore_errors=True)  # nothing usable: a rerun with other settings starts afresh
        raise DataError(
            f"{output_dir}: no usable rows ("
            + "; ".join(f"{mode}: empty generations {describe_empty(rows, mode)}" for mode, rows in generated.items())
            + "); nothing written; try do_sample: true, a larger max_new_tokens or few_shot examples")
    return {name: out for name, out in outputs.items() if out[0]}, stats


def split(rows: list[dict], test_fraction: float, seed: int):
    """train/test DatasetDict (a test split only when it gets at least one row and leaves one to train on)."""
    from datasets import Dataset, DatasetDict

    if not rows:
        raise DataError("no rows to write: every generated pair was empty or identical (see the .work chunks)")
    ds = Dataset.from_list(rows)
    n_test = round(len(rows) * test_fraction)
    if test_fraction <= 0 or n_test < 1 or n_test >= len(rows):
        return DatasetDict({"train": ds})
    parts = ds.train_test_split(test_size=n_test, seed=seed)
    return DatasetDict({"train": parts["train"], "test": parts["test"]})


# ----------------------------------------------------------------------------------------------- stage helpers
def load_prompts(args) -> list[str]:
    """The prompt texts of the configured dataset (first `max_prompts`). With `prompts_split` unset, the dataset's
    only split is used (and recorded in `args.prompts_split`); a dataset with several splits needs it set."""
    from llm_recipes.data import load_source

    if args.prompts_split is None:
        splits = list(load_source(args.prompts, args.prompts_config, split=None))
        if len(splits) != 1:
            raise ConfigError(f"{args.prompts}: several splits ({', '.join(splits)}); set prompts_split to one of them")
        args.prompts_split = splits[0]
        logger.info("prompts: %s, split '%s' (its only split)", args.prompts, args.prompts_split)
    ds = load_source(args.prompts, args.prompts_config, args.prompts_split)
    if args.max_prompts is not None:
        ds = ds.select(range(min(len(ds), args.max_prompts)))
    if args.prompt_column and args.prompt_column not in ds.column_names:
        raise DataError(f"{args.prompts}: prompt_column '{args.prompt_column}' not found; columns seen: {ds.column_names}")
    prompts = [prompt_text(row, args.prompt_column, i, args.prompts) for i, row in enumerate(ds)]
    if not prompts:
        raise DataError(f"{args.prompts}[{args.prompts_split}]: no prompts")
    return prompts


def load_generator(path: str, args):
    """A generator for a model (Hub id, folder or adapter folder) on the configured backend."""
    from llm_recipes.chat_templates import setup_chat_template
    from llm_recipes.models import check_local_weights, load_causal_lm, load_tokenizer_from, resolve_dtype

    check_local_weights(path)
    if args.backend == "vllm":
        return VLLMGenerator(path, args.max_new_tokens, args.temperature, args.top_p, args.dtype)
    tokenizer = load_tokenizer_from(path, "model_name_or_path", trust_remote_code=args.trust_remote_code)
    setup_chat_template(tokenizer)
    model = load_causal_lm(path, dtype=resolve_dtype(args.dtype), trust_remote_code=args.trust_remote_code)
    if torch.cuda.is_available():
        model = model.cuda()
    return TransformersGenerator(model, tokenizer, args.max_new_tokens, args.temperature, args.top_p, args.batch_size)


def settings_of(args, n_prompts: int) -> dict:
    """What the stored chunks depend on (a resumed run must match)."""
    keys = ("model_name_or_path", "prompts", "prompts_config", "prompts_split", "prompt_column", "constitution", "few_shot",
            "revision_rounds", "judge_model_name_or_path", "batch_size", "max_new_tokens", "do_sample", "temperature",
            "top_p", "dtype", "seed")
    settings = {k: getattr(args, k) for k in keys}
    for key in ("constitution", "few_shot"):
        if settings[key] and os.path.isfile(settings[key]):
            settings[key + "_sha256"] = hashlib.sha256(Path(settings[key]).read_bytes()).hexdigest()
    for key in ("model_name_or_path", "judge_model_name_or_path"):  # a retrained model at the same path: start over
        path = settings[key]
        if path and os.path.isdir(path):
            weights = sorted(Path(path).glob("*.safetensors")) + sorted(Path(path).glob("adapter_model.*"))
            settings[key + "_weights"] = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    settings["n_prompts"] = n_prompts
    return settings
