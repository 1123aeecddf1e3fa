"""`llm-recipes`: run the toy pipeline, a pipeline recipe, or one stage. It launches the same scripts as
`accelerate launch scripts/<stage>.py`; it is no second implementation.

    llm-recipes toy                                   # the embedded default, end to end on a CPU
    llm-recipes run recipes/toy/pipeline.yaml --from sft --until eval
    llm-recipes sft --config recipes/toy/sft.yaml [--accelerate_config accelerate_configs/ddp.yaml] [--key value]
    llm-recipes size --gpu_hours 100 --gpu h100       # Chinchilla: model size and tokens for a compute budget
    llm-recipes chat runs/toy/release                 # talk to a model: streamed, multi-turn, /exit or Ctrl-D
"""

from __future__ import annotations

import argparse
import os
import sys

from llm_recipes import REPO_ROOT
from llm_recipes.errors import RecipeError
from llm_recipes.pipeline import DEFAULT_ACCELERATE_CONFIG, run_pipeline, run_stage_process

TOY_PIPELINE = "recipes/toy/pipeline.yaml"


def stage_names() -> list[str]:
    return sorted(p.stem for p in (REPO_ROOT / "scripts").glob("*.py") if not p.stem.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chat"]:  # interactive, run here: the model path is relative to the caller's directory
        from llm_recipes.chat import main as chat_main

        return chat_main(argv[1:])
    parser = argparse.ArgumentParser(prog="llm-recipes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("toy", "run the toy pipeline (the embedded default)"), ("run", "run a pipeline YAML")):
        p = sub.add_parser(name, help=help_text)
        if name == "run":
            p.add_argument("pipeline", help="pipeline YAML, e.g. recipes/toy/pipeline.yaml")
        p.add_argument("--from", dest="from_stage", help="first stage to run")
        p.add_argument("--until", dest="until_stage", help="last stage to run")
        p.add_argument("--force", action="store_true", help="re-run stages whose output is already complete")
    sub.add_parser("chat", help="talk to a model in the terminal: `llm-recipes chat MODEL` (-h for options)", add_help=False)
    sub.add_parser("size", help="compute-optimal model size and tokens (Chinchilla): `llm-recipes size --gpu_hours 100 "
                   "--gpu h100` (-h for options)", add_help=False)
    for name in stage_names():
        p = sub.add_parser(name, help=f"launch scripts/{name}.py", add_help=False)
        p.add_argument("--accelerate_config", default=DEFAULT_ACCELERATE_CONFIG)
    args, rest = parser.parse_known_args(argv)

    if getattr(args, "pipeline", None):
        args.pipeline = os.path.abspath(args.pipeline)
    os.chdir(REPO_ROOT)  # recipes name paths relative to the repository root
    try:
        if args.command == "size":
            from llm_recipes.sizing import main as sizing_main

            sizing_main(rest)
            return 0
        if args.command in ("toy", "run"):
            if rest:
                parser.error(f"unrecognised arguments: {' '.join(rest)}")
            run_pipeline(TOY_PIPELINE if args.command == "toy" else args.pipeline, args.from_stage, args.until_stage, args.force)
            return 0
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate_config,
               f"scripts/{args.command}.py", *rest]
    return run_stage_process(command, env=dict(os.environ), cwd=REPO_ROOT)  # signals reach every rank


if __name__ == "__main__":
    raise SystemExit(main())
