"""Constitutional AI data: answer -> critique against a principle -> revision (and/or AI feedback: a judge
picks the better of two sampled answers by a principle). Writes Hub-format datasets that sft.py (`sft`) and
dpo.py / reward.py (`preferences`, `feedback`) read unchanged. A killed run resumes where it stopped.

    accelerate launch scripts/cai.py --config recipes/toy/cai.yaml
"""

import logging
from pathlib import Path

import torch

from llm_recipes import cai
from llm_recipes.cai_config import CAIArguments
from llm_recipes.parser import run_cli
from llm_recipes.errors import ConfigError
from llm_recipes.hub import mark_complete, save_dataset
from llm_recipes.training import cpu_threads, setup_logging

logger = logging.getLogger("llm_recipes")

# The recipe YAML of this stage is parsed into these (tests parse every recipe with them).
CONFIG_CLASSES = (CAIArguments,)


def main(args: CAIArguments) -> None:
    setup_logging()
    torch.set_num_threads(cpu_threads())
    if not args.model_name_or_path:
        raise ConfigError("model_name_or_path: not set")
    principles = cai.load_constitution(args.constitution)
    shots = cai.few_shot_turns(cai.load_few_shot(args.few_shot), principles)
    prompts = cai.load_prompts(args)
    store = cai.ChunkStore(args.output_dir, cai.settings_of(args, len(prompts)))
    logger.info("%d prompts, %d principles, %d few-shot examples", len(prompts), len(principles), len(shots) // 6)

    gen = cai.load_generator(args.model_name_or_path, args)
    generated = {}
    stats = {"prompts": len(prompts), "prompts_split": args.prompts_split, "principles": [p.name for p in principles]}
    if args.mode in ("revision", "both"):
        def revise(start, end, chunk):
            return cai.critique_revision(gen, prompts[start:end], principles, shots, args.revision_rounds, args.do_sample,
                                         args.seed, list(range(start, end)), chunk)
        cai.run_chunks(store, "revision", len(prompts), args.batch_size, revise, "critique and revision")
        generated["revision"] = store.rows("revision")
        stats["revised"] = len(generated["revision"])
    if args.mode in ("feedback", "both"):
        judge = gen if args.judge_model_name_or_path in (None, args.model_name_or_path) else cai.load_generator(args.judge_model_name_or_path, args)
        def feedback(start, end, chunk):
            return cai.ai_feedback(gen, judge, prompts[start:end], principles, args.seed, list(range(start, end)), chunk)
        cai.run_chunks(store, "feedback", len(prompts), args.batch_size, feedback, "AI feedback")
        generated["feedback"] = store.rows("feedback")
        stats["judged_by_reply"] = sum(r["choice_from"] == "reply" for r in generated["feedback"])

    outputs, accounting = cai.usable_outputs(generated, args.output_dir)
    stats.update(accounting)
    for name, (rows, description) in outputs.items():
        save_dataset(cai.split(rows, args.test_fraction, args.seed), Path(args.output_dir) / name, f"CAI {name}",
                     f"{description} Model `{args.model_name_or_path}`, prompts `{args.prompts}` "
                     f"(split `{args.prompts_split}`).", stats)
    mark_complete(args.output_dir, "cai", model=args.model_name_or_path, prompts=args.prompts, stats=stats)
    print("cai: " + ", ".join(f"{k} {v}" for k, v in stats.items() if k.endswith(("_rows", "_left_out"))
                              or k.startswith("empty_") or k in ("prompts", "revised")))


if __name__ == "__main__":
    run_cli(main, CONFIG_CLASSES)
