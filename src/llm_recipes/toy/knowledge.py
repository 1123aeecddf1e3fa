"""What a model knows about the toy world, as a benchmark plug-in of the evaluate stage:

- fact completion: the answer sentence up to its value, as plain text ("The capital of Karavi is"), completed
  greedily; a hit when the completion starts with the value (and the value is not the start of a longer word).
  Per group: `train` and `heldout` countries (known: in the corpus before the cutoff) and `late` ones (only in
  documents after the cutoff, which curation drops: a model cannot know them);
- bits per byte on held-out text (the curated corpus's validation split): the language-modelling cost of later
  stages.

    benchmarks:
      toy_knowledge: {type: "llm_recipes.toy.knowledge:FactKnowledge", facts: runs/toy/data/benchmarks/facts_completion.jsonl,
                      corpus: runs/toy/curated, corpus_split: validation}

Per-item hits and per-document losses are kept (`details`) so that the claims table can give intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_recipes.evaluation.plugins import BenchmarkPlugin
from llm_recipes.evaluation.scoring import text_nll_bits


def is_completion_hit(completion: str, value: str) -> bool:
    """The completion states `value` first ("1534." for 1534, not "15340" nor "Karavian" for "Karavi")."""
    text = completion.strip()
    return text.startswith(value) and not text[len(value):len(value) + 1].isalnum()


@torch.no_grad()
def complete_greedily(model, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 64) -> list[str]:
    """Greedy plain-text continuations, each prompt after the document separator as in pretraining (no chat template:
    fact completion asks what the weights store, not how a chat model answers)."""
    tokenizer.padding_side = "left"
    prefix = tokenizer.bos_token or ""
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer([prefix + p for p in prompts[start:start + batch_size]], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


@dataclass
class FactKnowledgeOptions:
    facts: str  # fact-completion prompts (prompt, value, fact, group): a JSONL file or a dataset folder
    corpus: str | None = None  # documents (text) whose bits per byte are measured: a JSONL file or a dataset folder
    corpus_split: str = "validation"  # the folder's split (held-out text: what SFT must not unlearn)
    max_new_tokens: int = 8  # completion budget (a value is at most a few tokens)


class FactKnowledge(BenchmarkPlugin):
    """Fact completion per group (train, heldout, late and known = train + heldout) and bits per byte."""

    Options = FactKnowledgeOptions

    def __init__(self, name: str, options: FactKnowledgeOptions, args) -> None:
        from llm_recipes.evaluation.scoring import load_rows
        from llm_recipes.parser import check_data_source

        super().__init__(name, options, args)
        check_data_source(options.facts, self.key("facts"))
        self.rows = load_rows(options.facts, split="test")
        self.docs = []
        if options.corpus:
            check_data_source(options.corpus, self.key("corpus"))
            self.docs = [r["text"] for r in load_rows(options.corpus, split=options.corpus_split)]
        self.hits: dict[str, dict[str, list[int]]] = {}  # model -> group -> 0/1 per prompt
        self.doc_bits: dict[str, list[tuple[float, int]]] = {}  # model -> (bits, bytes) per document
        self.examples: dict[str, list[dict]] = {}

    def evaluate(self, model, tokenizer, name: str, path: str) -> dict[str, float]:
        completions = complete_greedily(model, tokenizer, [r["prompt"] for r in self.rows], self.options.max_new_tokens,
                                        self.args.batch_size)
        groups: dict[str, list[int]] = {}
        for row, text in zip(self.rows, completions):
            hit = int(is_completion_hit(text, row["value"]))
            groups.setdefault(row["group"], []).append(hit)
            if row["group"] != "late":
                groups.setdefault("known", []).append(hit)
        self.hits[name] = groups
        self.examples[name] = [{"prompt": r["prompt"], "completion": c, "value": r["value"]}
                               for r, c in list(zip(self.rows, completions))[:4]]
        order = ("known", "train", "heldout", "late")  # the report plots the first
        figures = {f"completion_{group}": sum(groups[group]) / len(groups[group]) for group in order if group in groups}
        if self.docs:
            self.doc_bits[name] = text_nll_bits(model, tokenizer, self.docs)
            figures["bits_per_byte"] = bits_per_byte(self.doc_bits[name])
        figures["n"] = len(self.rows)
        return figures

    def details(self) -> dict:
        return {"hits": self.hits, "doc_bits": self.doc_bits, "chance_late": chance_level(self.rows),
                "examples": self.examples}


def bits_per_byte(doc_bits: list[tuple[float, int]]) -> float:
    """Total bits over total bytes (lm-eval's weighting: long documents count by their length)."""
    return sum(b for b, _ in doc_bits) / max(sum(n for _, n in doc_bits), 1)


def chance_level(rows: list[dict], group: str = "late") -> float:
    """The completion rate a model that knows nothing about a country reaches at best: for each fact, the share of
    the most common value among known countries, averaged over the group's prompts."""
    known: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["group"] != group:
            counts = known.setdefault(r["fact"], {})
            counts[r["value"]] = counts.get(r["value"], 0) + 1
    shares = [max(known[r["fact"]].values()) / sum(known[r["fact"]].values()) for r in rows if r["group"] == group]
    return sum(shares) / max(len(shares), 1)
