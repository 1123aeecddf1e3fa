"""Public dataset formats in their published shapes, each through the stage that reads it, with every reported figure
recomputed independently (by hand, the way a user would check it).

    OMP_NUM_THREADS=1 python benchmarks/real_formats.py [--only alpaca,book.txt:paragraph] [--output-dir DIR]

Each case writes a small sample (tests/public_formats.py writes the SFT, preference and plain-text ones), runs the
stage script as a subprocess (`python scripts/<stage>.py ...`, offline, one thread, a step or so), reads the
figure the stage reports (log line, marker, results.json, curation_stats.json) and recomputes it from the rows as
written: train rows vs the rows a stage can use, pairwise accuracy by scoring each eval pair with
AutoModelForSequenceClassification, bytes per token with the saved tokenizer, GSM8K exact match from the logged
generations, MMLU accuracy from log-probabilities, HumanEval pass@1 from planted completions, curation totals from
the output Parquet rows and exclusions.jsonl. Prints progress per case, then the table; writes
real_formats.{json,md} into the output folder. Exits 1 if any figure disagrees.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The sample writers live beside the tests (tests and this benchmark share one definition of each published shape);
# the tests folder is not a package, so it goes on the import path.
sys.path.insert(0, str(REPO_ROOT / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from public_formats import (  # noqa: E402
    BOOK, HH_ROWS, OPENAI_ROWS, SHAREGPT_ROWS, TRL_ROWS, UF_TEST, WRITERS, ALPACA_ROWS, book_documents,
)

COMMON = ["--dtype", "float32", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true"]
SFT = [n for n in WRITERS if n not in ("hh_rlhf.jsonl.gz", "ultrafeedback_binarized", "trl_prompt_chosen_rejected")
       and not n.startswith("book")]
CASES = [*SFT, "hh_rlhf.jsonl.gz", "ultrafeedback_binarized", "trl_prompt_chosen_rejected",
         *[n for n in WRITERS if n.startswith("book")], "gsm8k.jsonl.gz", "mmlu", "humaneval.jsonl.gz",
         "web.jsonl", "web.jsonl.gz"]
REWARD_MAX_LENGTH = 64  # tokens: the longest hh-rlhf eval pair (71 tokens with this tokenizer) is not scored


def run_stage(script: str, *args: str, timeout: int = 600) -> tuple[str, list[str]]:
    """Run scripts/<script> as a user would; return its log (stdout + stderr) and the command. Stops on failure."""
    command = [sys.executable, str(REPO_ROOT / "scripts" / script), *map(str, args)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{script} exited {proc.returncode}: {log[-2000:]}")
    return log, command


def row(fmt: str, stage: str, rows_in: int, used: int, dropped: dict, reported, recomputed, agree: bool | None,
        note: str = "") -> dict:
    return {"format": fmt, "stage": stage, "rows_in": rows_in, "rows_used": used, "rows_dropped": dropped,
            "reported": reported, "recomputed": recomputed, "agree": agree, "note": note}


def close(a, b, tol: float = 1e-9) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=tol)


# ------------------------------------------------------------------------------------------------ shared model
def build_model(work: Path) -> Path:
    """A byte-level BPE tokenizer trained on the samples' own text and a random 2-layer Llama for it."""
    from transformers import AutoTokenizer

    from llm_recipes.models import build_model as build, get_architecture
    from llm_recipes.tokenizer import train_bpe_tokenizer

    texts = [BOOK] * 5 + [json.dumps(r) for r in ALPACA_ROWS + SHAREGPT_ROWS + OPENAI_ROWS + HH_ROWS + TRL_ROWS]
    texts += [gsm8k_row(i, "0")["answer"] + mmlu_row(i)["question"] for i in range(10)]
    out = work / "tiny_model"
    tokenizer = train_bpe_tokenizer(texts, vocab_size=512, model_max_length=256)
    tokenizer.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    build(get_architecture("tiny"), tokenizer, seed=0).save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------------ SFT
def sft_case(name: str, work: Path, model: Path) -> dict:
    sample = WRITERS[name](work / "data")
    options = [f"--{k}={v}" for k, v in sample.options.items()]
    if not sample.eval_rows:  # no held-out split in the data: carve none, every usable row trains
        options += ["--dataset_test_split_size", "0"]
    log, _ = run_stage("sft.py", "--model_name_or_path", model, "--dataset_name", sample.path, *options,
                       "--max_steps", "1", "--per_device_train_batch_size", "2", "--max_length", "64",
                       "--output_dir", work / "runs" / name, *COMMON)
    found = re.search(r"data: .*?: (\d+) train rows(?:, (\d+) eval rows)?", log)
    dropped = re.search(r"dropped (\d+) malformed row\(s\) of (\d+)", log)
    reported = (int(found.group(1)), int(found.group(2) or 0)) if found else None
    recomputed = (sample.usable, sample.eval_rows)  # counted from the rows as written
    return row(name, "sft", sample.rows, reported[0] if reported else None,
               {"malformed": int(dropped.group(1))} if dropped else {},
               f"train/eval rows {reported}", f"train/eval rows {recomputed}",
               reported == recomputed and (int(dropped.group(1)) if dropped else 0) == sample.rows - sample.usable,
               f"{sum(not r['input'] for r in ALPACA_ROWS)} of {len(ALPACA_ROWS)} rows with an empty input"
               if name.startswith("alpaca") else "")


# ------------------------------------------------------------------------------------------------ preference
def hh_turns(text: str) -> list[dict]:
    """hh-rlhf text ("\\n\\nHuman: ...\\n\\nAssistant: ...") as chat turns."""
    parts = re.split(r"\n\n(Human|Assistant):", text)[1:]
    return [{"role": "user" if who == "Human" else "assistant", "content": said.strip()}
            for who, said in zip(parts[::2], parts[1::2])]


def score_pairs(out: Path, pairs: list[tuple[list, list, list]], max_length: int) -> tuple[int, int, int]:
    """(correct, scored, too long): each side alone through the chat template, no padding, the reward model's logit."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    correct = scored = too_long = 0
    for prompt, chosen, rejected in pairs:
        ids = [tokenizer.apply_chat_template(prompt + side, tokenize=True, return_dict=True)["input_ids"]
               for side in (chosen, rejected)]
        if max(len(x) for x in ids) > max_length:
            too_long += 1
            continue
        with torch.no_grad():
            good, bad = (model(input_ids=torch.tensor([x])).logits[0, 0].item() for x in ids)
        scored += 1
        correct += good > bad
    return correct, scored, too_long


def reward_case(name: str, work: Path, model: Path) -> dict:
    sample = WRITERS[name](work / "data")
    if name == "hh_rlhf.jsonl.gz":  # hh-rlhf ships train.jsonl.gz and test.jsonl.gz side by side: the same rows here
        shutil.copy(sample.path, sample.path.parent / "test.jsonl.gz")
        data, eval_rows = sample.path.parent, HH_ROWS
        good = [r for r in eval_rows if not any(r[k].endswith("\n\nAssistant:") for k in ("chosen", "rejected"))]
        pairs = []
        for r in good:  # the shared dialogue is the prompt; the last assistant turn of each side is the reply
            chosen, rejected = hh_turns(r["chosen"]), hh_turns(r["rejected"])
            pairs.append((chosen[:-1], chosen[-1:], rejected[-1:]))
    else:
        data, eval_rows = sample.path, UF_TEST
        good = eval_rows
        pairs = [([{"role": "user", "content": r["prompt"]}], r["chosen"][1:], r["rejected"][1:]) for r in good]
    options = [f"--{k}={v}" for k, v in sample.options.items()]
    out = work / "runs" / name
    log, _ = run_stage("reward.py", "--model_name_or_path", model, "--dataset_name", data, *options,
                       "--max_steps", "1", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "8",
                       "--max_length", REWARD_MAX_LENGTH, "--output_dir", out, *COMMON)
    metrics = json.loads((out / "llm_recipes.json").read_text())["metrics"]
    correct, scored, too_long = score_pairs(out, pairs, REWARD_MAX_LENGTH)
    accuracy = correct / scored if scored else None
    reported = tuple(metrics.get(k) for k in ("eval_accuracy", "eval_pairs_scored", "eval_pairs_dropped_too_long"))
    agree = close(reported[0], accuracy, 1e-12) and reported[1:] == (scored, too_long)
    found = re.search(r"data: .*?: (\d+) train rows", log)
    train_ok = found is not None and int(found.group(1)) == sample.usable
    malformed = re.search(r"\[test\]: dropped (\d+) malformed row\(s\) of (\d+)", log)
    said = (int(malformed.group(1)), int(malformed.group(2))) if malformed else (0, len(eval_rows))
    agree = agree and said == (len(eval_rows) - len(good), len(eval_rows))  # the log's count of dropped eval rows
    return row(f"{name} (eval split)", "reward", len(eval_rows), reported[1],
               {"malformed": said[0], "too_long": reported[2]},
               f"acc {fmt(reported[0])}, scored {reported[1]}, malformed {said[0]}, too long {reported[2]}",
               f"acc {fmt(accuracy)} ({correct}/{scored}), malformed {len(eval_rows) - len(good)}, too long {too_long}",
               agree and train_ok,
               f"train rows {found.group(1) if found else '?'} (usable {sample.usable})")


def dpo_case(name: str, work: Path, model: Path) -> dict:
    sample = WRITERS[name](work / "data")
    log, _ = run_stage("dpo.py", "--model_name_or_path", model, "--dataset_name", sample.path,
                       "--dataset_test_split_size", "0", "--max_steps", "1", "--per_device_train_batch_size", "2",
                       "--max_length", "64", "--output_dir", work / "runs" / name, *COMMON)
    found = re.search(r"data: .*?: (\d+) train rows", log)
    reported = int(found.group(1)) if found else None
    recomputed = len(TRL_ROWS)  # every written pair has a prompt and non-empty replies
    return row(name, "dpo", sample.rows, reported, {}, f"train rows {reported}", f"train rows {recomputed}",
               reported == recomputed)


# ------------------------------------------------------------------------------------------------ plain text
def text_case(name: str, work: Path) -> dict:
    from transformers import AutoTokenizer

    sample = WRITERS[name](work / "data" / name.replace(":", "_"), copies=20)  # 20 chapters: a tenth is held out
    by = sample.options["text_sample_by"]
    out = work / "runs" / name.replace(":", "_")
    run_stage("tokenizer.py", "--dataset_name", sample.path, "--text_sample_by", by, "--vocab_size", "300",
              "--output_dir", out)
    metrics = json.loads((out / "llm_recipes.json").read_text())
    metrics = metrics.get("metrics", metrics)
    raw = sample.path.read_bytes()
    documents = book_documents((gzip.decompress(raw) if sample.path.suffix == ".gz" else raw).decode("utf-8"), by)
    held = min(500, len(documents) // 10)  # heldout_texts (500), at most a tenth: the first documents
    tokenizer = AutoTokenizer.from_pretrained(out)
    heldout = documents[:held]
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in heldout)
    bpt = sum(len(t.encode("utf-8")) for t in heldout) / n_tokens if n_tokens else None
    reported = (metrics.get("train_texts"), metrics.get("heldout_texts"), metrics.get("bytes_per_token"))
    agree = reported[:2] == (len(documents) - held, held) and (close(reported[2], bpt) if held else reported[2] is None)
    return row(name, "tokenizer", sample.rows, len(documents) - held, {},
               f"train {reported[0]}, held out {reported[1]}, bytes/token {fmt(reported[2])}",
               f"train {len(documents) - held}, held out {held}, bytes/token {fmt(bpt)}", agree)


# ------------------------------------------------------------------------------------------------ GSM8K / MMLU
GSM8K_FINALS = ["4200", "4,200", "42", "17", "4200"]  # the reply is "#### 4,200": 3 of the 5 references match
WORKED_REPLY = "6 x 700 = 4,200 apples.\n#### 4,200"


def gsm8k_row(i: int, final: str) -> dict:  # openai/gsm8k: a worked solution ending in "#### N"
    return {"question": f"Question {i}: how many apples are in {i} crates?",
            "answer": f"Each crate holds {i} x 10 = <<{i}*10={i * 10}>>{i * 10} apples.\n#### {final}"}


def mmlu_row(i: int) -> dict:  # cais/mmlu: question, subject, choices (4), answer (class label 0-3)
    return {"question": f"Which city is the capital of country {i}?", "subject": "geography",
            "choices": [f"City {i}{c}" for c in "wxyz"], "answer": (i * 3) % 4}


def answering_model(model_dir: Path, out: Path) -> Path:
    """The tiny model trained a few steps so that its greedy reply to each GSM8K question is WORKED_REPLY."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    encoded = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": gsm8k_row(i, f)["question"]}],
                                                       tokenize=False, add_generation_prompt=True)
                         + WORKED_REPLY + tokenizer.eos_token, return_tensors="pt").input_ids
               for i, f in enumerate(GSM8K_FINALS)]
    model.train()
    for step in range(150):
        ids = encoded[step % len(encoded)]
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def eval_cases(work: Path, model: Path, wanted: set[str]) -> list[dict]:
    """GSM8K (.jsonl.gz) and MMLU (cais/mmlu's Hub layout) through one run of scripts/evaluate.py."""
    import torch
    import yaml
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = work / "data" / "eval"
    (data / "all").mkdir(parents=True, exist_ok=True)
    gsm8k = [gsm8k_row(i, f) for i, f in enumerate(GSM8K_FINALS)]
    with gzip.open(data / "gsm8k_test.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in gsm8k)
    mmlu = [mmlu_row(i) for i in range(12)]
    features = Features({"question": Value("string"), "subject": Value("string"), "choices": Sequence(Value("string")),
                         "answer": ClassLabel(names=list("ABCD"))})
    Dataset.from_list(mmlu, features=features).to_parquet(str(data / "all" / "test-00000-of-00001.parquet"))
    model_dir = answering_model(model, work / "answers")
    benchmarks = {}
    if "gsm8k.jsonl.gz" in wanted:
        benchmarks["gsm8k"] = {"type": "generate_until", "data_files": str(data / "gsm8k_test.jsonl.gz"),
                               "answer_regex": "gsm8k", "max_gen_toks": 32}
    if "mmlu" in wanted:
        benchmarks["mmlu"] = {"type": "multiple_choice", "data_files": str(data / "all")}
    out = work / "runs" / "evaluate"
    recipe = work / "eval.yaml"
    recipe.write_text(yaml.safe_dump({"models": [str(model_dir)], "model_names": ["answers"], "num_fewshot": 0,
                                      "log_samples": True, "benchmarks": benchmarks, "output_dir": str(out)}))
    run_stage("evaluate.py", "--config", recipe)
    results = json.loads((out / "results.json").read_text())
    rows = []
    if "gsm8k" in benchmarks:
        samples = [json.loads(line) for line in (out / "samples" / "answers" / "gsm8k.jsonl").read_text().splitlines()]
        hits = []
        for s in samples:  # the documented gsm8k regex: the generation's first "#### N"; commas, a final "." dropped
            found = re.search(r"#### (-?[0-9.,]+)", s["resps"][0][0])
            predicted = found.group(1).replace(",", "").rstrip(".") if found else None
            hits.append(predicted == s["doc"]["answer"].split("####")[-1].strip().replace(",", ""))
        by_hand = sum(hits) / len(hits)
        reported = results["benchmarks"]["answers"]["gsm8k"].get("exact_match")
        n = results["benchmark_n"]["answers"]["gsm8k"]
        rows.append(row("gsm8k.jsonl.gz", "evaluate", len(gsm8k), n, {}, f"exact_match {fmt(reported)}, n {n}",
                        f"exact_match {fmt(by_hand)} ({sum(hits)}/{len(hits)} logged), n {len(gsm8k)}",
                        close(reported, by_hand) and n == len(gsm8k) == len(samples)))
    if "mmlu" in benchmarks:
        lm, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)

        def logprob(context: str, continuation: str) -> float:
            start = len(tokenizer(context, add_special_tokens=False).input_ids)
            ids = tokenizer(context + continuation, add_special_tokens=False).input_ids
            with torch.no_grad():
                logprobs = lm(torch.tensor([ids])).logits[0].log_softmax(-1)
            return sum(logprobs[i - 1, ids[i]].item() for i in range(start, len(ids)))

        right = 0
        for r in mmlu:  # the chat-templated question, each choice's summed log-probability, the best one
            context = tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                                    add_generation_prompt=True)
            scores = [logprob(context, choice) for choice in r["choices"]]
            right += max(range(4), key=lambda i: scores[i]) == r["answer"]
        reported = results["benchmarks"]["answers"]["mmlu"].get("acc")
        n = results["benchmark_n"]["answers"]["mmlu"]
        rows.append(row("mmlu (all/test parquet)", "evaluate", len(mmlu), n, {}, f"acc {fmt(reported)}, n {n}",
                        f"acc {fmt(right / len(mmlu))} ({right}/{len(mmlu)}), n {len(mmlu)}",
                        close(reported, right / len(mmlu), 1e-9) and n == len(mmlu)))
    return rows


# ------------------------------------------------------------------------------------------------ HumanEval
def humaneval_case(work: Path) -> dict:
    """HumanEval.jsonl.gz (12 problems) with planted completions: canonical solutions and a wrong body."""
    from llm_recipes.evaluation.code import humaneval_path, pass_at_k, read_problems

    path = work / "data" / "HumanEval.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in read_problems(humaneval_path())[:12])
    problems = read_problems(path)
    wrong = "    raise NotImplementedError('planted')\n"
    completions = [[p["canonical_solution"], wrong] if i % 3 == 0 else [p["canonical_solution"]] if i % 3 == 1
                   else [wrong] for i, p in enumerate(problems)]
    planted = sum(c.count(p["canonical_solution"]) / len(c) for p, c in zip(problems, completions)) / len(problems)
    try:
        scores = pass_at_k(problems, completions, k=(1,), timeout=20, num_workers=2)
    except Exception as error:  # noqa: BLE001 - a sandbox that refuses to start: say why, report no figure
        return row("humaneval.jsonl.gz", "evaluate (code sandbox)", 12, 0, {}, None, f"pass@1 {fmt(planted)}", None,
                   f"not run: {str(error).splitlines()[0][:200]}")
    return row("humaneval.jsonl.gz", "evaluate (code sandbox)", 12, len(problems), {},
               f"pass@1 {fmt(scores['pass@1'])}", f"pass@1 {fmt(planted)} (planted)", close(scores["pass@1"], planted),
               "scored in-process through the sandbox, as the code task does")


# ------------------------------------------------------------------------------------------------ curation
PARAGRAPH = ("The harbour town of {name} trades copper and wool along the coast, and its market opens every {day}. "
             "Visitors climb the old stairs to the fort at dusk, when the light turns the hills gold. Page {i} of the "
             "town guide lists {n} inns, {m} bakeries and a museum of maps.")
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def web_rows(prefix: str) -> tuple[list[dict], dict[str, int]]:
    """12 web documents with their own source/url/date/id fields; by hand: 2 after the cutoff, 1 on the blocked
    domain, 1 shorter than 200 characters."""
    rows = []
    for i in range(12):
        text = PARAGRAPH.format(name=f"{prefix.title()}town{i}", day=DAYS[i % 7], i=i, n=3 + i, m=2 * i + 1)
        rows.append({"id": f"{prefix}-{i}", "text": text, "url": f"https://news.example.com/{prefix}/{i}",
                     "date": "2025-01-0{}".format(i + 1) if i < 2 else f"2023-04-{i + 1:02d}",
                     "source": "commoncrawl-2024-10", "language": "en", "kind": "article"})
    rows[2]["url"] = f"https://spam-site.com/{prefix}"
    rows[3]["text"] = "Too short to keep."
    return rows, {"cutoff:after_cutoff": 2, "url:domain": 1, "length:too_short": 1}


def curation_cases(work: Path, wanted: list[str]) -> list[dict]:
    """The docs' web-corpus recipe over a .jsonl and a .jsonl.gz source in one run of scripts/curate.py."""
    import pyarrow.parquet as pq
    import yaml

    sources, expected = [], {}
    for name in wanted:
        rows, reasons = web_rows(name.split(".")[0] + ("gz" if name.endswith(".gz") else ""))
        folder = work / "data" / name.replace(".", "_")
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if name.endswith(".gz"):
            (folder / "pages.jsonl.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / "pages.jsonl").write_text(text)
        source = name.replace(".", "_")
        sources.append({"name": source, "kind": "jsonl", "path": str(folder), "language_key": "language",
                        "share": 1.0 / len(wanted)})
        expected[source] = (name, rows, reasons)
    out = work / "runs" / "curated"
    recipe = work / "curate.yaml"
    recipe.write_text(yaml.safe_dump({
        "sources": sources, "output_dir": str(out), "tasks": 1, "workers": 1, "word_tokenizer": "whitespace",
        "filters": {"length": {"min_chars": 200},
                    # as the docs' recipe: the URL filter runs on html/warc sources unless routed to others
                    "url": {"use_integrated_lists": False, "extra_domains": ["spam-site.com"],
                            "route": {"sources": [s["name"] for s in sources]}}},
        "dedup": {"exact": True, "near": False}, "cutoff_date": "2024-06-30", "validation_fraction": 0.0}))
    run_stage("curate.py", "--config", recipe)
    stats = json.loads((out / "curation_stats.json").read_text())
    output = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    ledger = [json.loads(line) for line in (out / "exclusions.jsonl").read_text().splitlines()]
    result = []
    for source, (name, rows, reasons) in expected.items():
        s = stats["sources"][source]
        excluded: dict[str, int] = {}
        for r in ledger:
            if r["source"] == source:
                key = f"{r['stage']}:{r['reason']}"
                excluded[key] = excluded.get(key, 0) + 1
        kept = sum(1 for r in output if r["source"] == source)
        own = {json.loads(r["row_metadata"]).get("source") for r in output if r["source"] == source}
        own_kept = own == {"commoncrawl-2024-10"}  # the row's own `source` field, kept beside the recipe's name
        agree = ((s["input"], s["kept"], s["excluded"]) == (len(rows), kept, sum(excluded.values()))
                 and excluded == reasons and kept == len(rows) - sum(reasons.values()) and own_kept)
        result.append(row(name, "curate", s["input"], s["kept"], excluded,
                          f"{s['input']} in = {s['kept']} kept + {s['excluded']} excluded",
                          f"{len(rows)} written; {kept} output rows + {sum(excluded.values())} ledger lines "
                          f"(by hand: {len(rows) - sum(reasons.values())} + {sum(reasons.values())})", agree,
                          "row's own source kept in row_metadata" if own_kept else f"row_metadata sources {own}"))
    return result


# ------------------------------------------------------------------------------------------------ driver
def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def machine() -> dict:
    import datasets
    import torch
    import transformers
    import trl

    return {"cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__, "datasets": datasets.__version__,
            "platform": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def markdown(result: dict) -> str:
    lines = ["# Public formats through their stages: reported vs recomputed", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}; {result['seconds']:.0f} s", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), "",
             "| format | stage | rows in | rows used | rows dropped (by reason) | figure reported | figure recomputed "
             "| agree |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        dropped = ", ".join(f"{k} {v}" for k, v in r["rows_dropped"].items()) or "0"
        agree = "yes" if r["agree"] else "no" if r["agree"] is False else r["note"]
        lines.append(f"| {r['format']} | {r['stage']} | {r['rows_in']} | {r['rows_used']} | {dropped} | "
                     f"{r['reported']} | {r['recomputed']} | {agree} |")
    notes = [f"- {r['format']}: {r['note']}" for r in result["rows"] if r["note"] and r["agree"] is not None]
    return "\n".join(lines + ([""] + notes if notes else []) + ["", result["verdict"], ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated cases (default: all): {', '.join(CASES)}")
    parser.add_argument("--output-dir", default=str(REPO_ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    wanted = [c for c in args.only.split(",") if c] or CASES
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        print(f"error: --only: unknown case(s) {', '.join(unknown)} (known: {', '.join(CASES)})", file=sys.stderr)
        return 2
    start = time.time()
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="real_formats_"))

    def record(new: list[dict]) -> None:
        for r in new:
            rows.append(r)
            verdict = "agree" if r["agree"] else "DISAGREE" if r["agree"] is False else r["note"]
            print(f"[{time.time() - start:5.0f}s] {r['format']} ({r['stage']}): {r['reported']} | "
                  f"recomputed {r['recomputed']} -> {verdict}", flush=True)

    def attempt(name: str, stage: str, fn) -> None:
        try:
            record(fn())
        except Exception as error:  # noqa: BLE001 - a stage that fails is a row that disagrees, and the run goes on
            record([row(name, stage, None, None, {}, None, None, False, f"failed: {str(error)[-400:]}")])

    try:
        needs_model = [c for c in wanted if not c.startswith(("book", "humaneval", "web"))]
        model = build_model(work) if needs_model else None
        for name in wanted:
            if name in SFT:
                attempt(name, "sft", lambda n=name: [sft_case(n, work, model)])
            elif name in ("hh_rlhf.jsonl.gz", "ultrafeedback_binarized"):
                attempt(name, "reward", lambda n=name: [reward_case(n, work, model)])
            elif name == "trl_prompt_chosen_rejected":
                attempt(name, "dpo", lambda n=name: [dpo_case(n, work, model)])
            elif name.startswith("book"):
                attempt(name, "tokenizer", lambda n=name: [text_case(n, work)])
            elif name == "humaneval.jsonl.gz":
                attempt(name, "evaluate (code sandbox)", lambda: [humaneval_case(work)])
        evals = {c for c in wanted if c in ("gsm8k.jsonl.gz", "mmlu")}
        if evals:
            attempt(",".join(sorted(evals)), "evaluate", lambda: eval_cases(work, model, evals))
        webs = [c for c in wanted if c.startswith("web")]
        if webs:
            attempt(",".join(webs), "curate", lambda: curation_cases(work, webs))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    disagree = [r["format"] for r in rows if r["agree"] is False]
    not_run = [r["format"] for r in rows if r["agree"] is None]
    verdict = (f"{len(rows) - len(disagree) - len(not_run)} of {len(rows)} rows agree"
               + (f"; DISAGREE: {', '.join(disagree)}" if disagree else "")
               + (f"; not run: {', '.join(not_run)}" if not_run else ""))
    result = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": time.time() - start,
              "machine": machine(), "rows": rows, "verdict": verdict}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_formats.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "real_formats.md").write_text(markdown(result))
    print()
    print(markdown(result))
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
