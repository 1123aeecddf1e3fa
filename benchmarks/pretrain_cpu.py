"""CPU: our pretraining step (scripts/pretrain.py's Trainer setup) vs a bare PyTorch loop, same model, batches
and data, in one process, alternating rounds. Goal: ours >= 0.9 x bare tokens/s.

    OMP_NUM_THREADS=1 python benchmarks/pretrain_cpu.py            # needs runs/toy/{data,tokenizer}
    (llm-recipes toy --until tokenizer makes them)

Writes benchmarks/results/pretrain_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.optimization import get_scheduler  # noqa: E402

from llm_recipes.data_config import DataArguments  # noqa: E402
from llm_recipes.parser import CPU_DEFAULTS  # noqa: E402
from llm_recipes.pretrain import build_trainer  # noqa: E402
from llm_recipes.pretrain_config import PretrainArguments  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class StepTimer(TrainerCallback):
    """Wall time from the start of step `skip` + 1 to the end of the last step (setup and warm-up excluded)."""

    def __init__(self, skip: int):
        self.skip, self.start, self.end = skip, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()


def bare_loop(model, dataloader, steps: int, cfg: PretrainArguments, skip: int) -> float:
    """The same optimisation in plain PyTorch over the same DataLoader (same batches, same order, same
    collation cost): AdamW with decay on matrices, clipping, the same schedule."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, cfg.get_warmup_steps(steps), steps)
    model.train()
    start, i = None, 0
    while i < steps:  # over epochs, as the Trainer does
        for batch in dataloader:
            if i == steps:
                break
            if i == skip:
                start = time.perf_counter()
            i += 1
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/toy/data/corpus")
    parser.add_argument("--tokenizer", default="runs/toy/tokenizer")
    parser.add_argument("--model_size", default="toy")
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=15, help="steps per round (the first 3 are not timed)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=str(RESULTS / "pretrain_cpu"))
    args = parser.parse_args()
    skip = 3
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    with tempfile.TemporaryDirectory() as tmp:
        cfg = PretrainArguments(
            output_dir=tmp, tokenizer_name_or_path=args.tokenizer, model_size=args.model_size,
            block_size=args.block_size, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
            learning_rate=3e-3, logging_steps=20, save_strategy="no", eval_strategy="no", report_to="none",
            disable_tqdm=True, eval_before_training=False, seed=0, **CPU_DEFAULTS,
        )
        trainer = build_trainer(DataArguments(dataset_name=args.data, dataset_test_split="none"), cfg)
        timer = StepTimer(skip)
        trainer.add_callback(timer)
        bare_model = copy.deepcopy(trainer.model)
        dataloader = trainer.get_train_dataloader()  # the Trainer's own: same batches, same order
        tokens_timed = (args.steps - skip) * args.batch_size * args.block_size

        ours, bare = [], []
        for _ in range(args.rounds):  # alternate, so that load from other processes hits both alike
            trainer.train()
            ours.append(tokens_timed / (timer.end - timer.start))
            bare.append(tokens_timed / bare_loop(bare_model, dataloader, args.steps, cfg, skip))
            print(f"round: ours {ours[-1]:.0f} tok/s, bare {bare[-1]:.0f} tok/s, ratio {ours[-1] / bare[-1]:.3f}",
                  flush=True)

    ratios = [o / b for o, b in zip(ours, bare)]
    result = {
        "benchmark": "pretraining step on CPU: scripts/pretrain.py's Trainer setup vs a bare PyTorch loop",
        "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
        "device": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(), "load_average_at_end": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "setup": {"model_size": args.model_size, "parameters": trainer.model.num_parameters(),
                  "block_size": args.block_size, "batch_size": args.batch_size, "steps_per_round": args.steps,
                  "timed_steps_per_round": args.steps - skip, "rounds": args.rounds, "attention": "sdpa",
                  "dtype": "float32", "data": args.data},
        "tokens_per_sec": {"ours": ours, "bare": bare},
        "median_tokens_per_sec": {"ours": statistics.median(ours), "bare": statistics.median(bare)},
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "goal": ">= 0.9",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Pretraining step on CPU: ours vs bare PyTorch",
        "",
        f"Command: `{result['command']}`  ",
        f"Device: {result['device']['cpu']}, {result['device']['cores']} cores, torch threads "
        f"{result['device']['torch_threads']}, load average at the end {result['device']['load_average_at_end']}  ",
        f"Versions: torch {torch.__version__}, transformers {transformers.__version__}  ",
        f"Setup: {args.model_size} model ({result['setup']['parameters'] / 1e6:.2f}M), block {args.block_size}, "
        f"batch {args.batch_size}, fp32, sdpa with per-document masks, {args.steps - skip} timed steps x "
        f"{args.rounds} alternating rounds",
        "",
        "| round | ours tok/s | bare tok/s | ratio |",
        "|---|---|---|---|",
        *[f"| {i + 1} | {o:.0f} | {b:.0f} | {o / b:.3f} |" for i, (o, b) in enumerate(zip(ours, bare))],
        "",
        f"**Median ratio: {result['ratio_median']:.3f}** (goal >= 0.9).",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"median ratio ours/bare: {result['ratio_median']:.3f} -> {out}.json/.md")


if __name__ == "__main__":
    main()
