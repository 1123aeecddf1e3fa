"""`llm-recipes`: run the toy pipeline, a pipeline recipe, or one stage, from any directory. A stage is the same
script as `accelerate launch scripts/<stage>.py`; this is no second implementation.

    llm-recipes toy                                   # the embedded default, end to end on a CPU
    llm-recipes run recipes/toy/pipeline.yaml --from sft --until eval
    llm-recipes sft --config recipes/toy/sft.yaml [--accelerate_config accelerate_configs/ddp.yaml] [--key value]
    llm-recipes size --gpu_hours 100 --gpu h100       # Chinchilla: model size and tokens for a compute budget
    llm-recipes chat runs/toy/release                 # talk to a model: streamed, multi-turn, /exit or Ctrl-D
    llm-recipes serve runs/toy/release                # OpenAI-compatible API behind a guard on 127.0.0.1:8000
    llm-recipes monitor runs/serve/requests.jsonl     # the serve log summed up, and a plot next to it
    llm-recipes update --config recipes/update/update.yaml  # feedback -> DPO -> evaluation -> release if gates hold

Outputs (runs/...) land in the directory you run it from. A recipe, pipeline or accelerate config path is yours
when it exists from your directory, else the one shipped with the package (recipes/toy/sft.yaml works anywhere).
"""

from __future__ import annotations

import argparse
import os
import sys

from llm_recipes import PROJECT_ROOT
from llm_recipes.errors import RecipeError
from llm_recipes.stages import DEFAULT_ACCELERATE_CONFIG, STAGES, get_stage

TOY_PIPELINE = "recipes/toy/pipeline.yaml"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """One line per command: argparse sizes the name column without the commands' own indent, so the longest
    stage name pushed its help onto a second line."""

    def __init__(self, prog: str):
        super().__init__(prog, width=120, max_help_position=30)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(len(name) for name in action.choices) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-recipes", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[2],
        formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (the seven below, then one per stage: `llm-recipes <stage> --config recipe.yaml`)")
    for name, help_text in (("toy", "run the toy pipeline (the embedded default) end to end"),
                            ("run", "run a pipeline YAML: its stages in order, finished ones skipped")):
        p = sub.add_parser(name, help=help_text)
        if name == "run":
            p.add_argument("pipeline", help="pipeline YAML, e.g. recipes/pipelines/fineweb-125m.yaml")
        p.add_argument("--from", dest="from_stage", help="first stage to run")
        p.add_argument("--until", dest="until_stage", help="last stage to run")
        p.add_argument("--force", action="store_true", help="re-run stages whose output is already complete")
        p.add_argument("--verbose", action="store_true",
                       help="show each stage's own output here (default: in <run folder>/logs/<stage>.log)")
        p.add_argument("--seed", type=int, help="`--seed` for every stage whose recipe has one (another world, "
                       "initialisation and sampling: run it in another directory, or with --force)")
    sub.add_parser("chat", help="talk to a model in the terminal: `llm-recipes chat MODEL` (-h for options)", add_help=False)
    sub.add_parser("serve", help="serve a model over an OpenAI-compatible API behind a guard: `llm-recipes serve MODEL`",
                   add_help=False)
    sub.add_parser("monitor", help="sum up a serve log and plot it: `llm-recipes monitor runs/serve/requests.jsonl`",
                   add_help=False)
    sub.add_parser("update", help="a serve log's feedback -> DPO -> evaluate -> release if no gate regresses",
                   add_help=False)
    sub.add_parser("size", help="compute-optimal model size and tokens (Chinchilla), e.g. --gpu_hours 100 --gpu h100",
                   add_help=False)
    for stage in STAGES:
        p = sub.add_parser(stage.name, help=stage.help, add_help=False)
        p.add_argument("--accelerate_config", default=DEFAULT_ACCELERATE_CONFIG)
    return parser


def _with_located_config(args: list[str]) -> list[str]:
    """`--config X`: X from the caller's directory when there, else the recipe shipped with the package."""
    from llm_recipes.pipeline import locate

    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = locate(out[i + 1], PROJECT_ROOT)
        elif arg.startswith("--config="):
            out[i] = "--config=" + locate(arg.split("=", 1)[1], PROJECT_ROOT)
    return out


SERVE_RECIPE = "recipes/serve/serve.yaml"


def serve_main(args: list[str]) -> int:
    """`llm-recipes serve MODEL [--key value]`: scripts/serve.py with MODEL as model_name_or_path and, unless
    `--config` is given, the shipped recipes/serve/serve.yaml."""
    args = list(args)
    if args and not args[0].startswith("-"):
        args = ["--model_name_or_path", args[0], *args[1:]]
    if not any(a == "--config" or a.startswith("--config=") for a in args) and not {"-h", "--help"} & set(args):
        args = ["--config", SERVE_RECIPE, *args]
    return run_here("serve", args)


def run_here(name: str, args: list[str]) -> int:
    """Run scripts/<name>.py in this process (paths relative to the caller's directory), as `python` would."""
    from llm_recipes.parser import run_cli
    from llm_recipes.stages import load_script

    script = PROJECT_ROOT / "scripts" / f"{name}.py"
    module = load_script(script)
    saved = sys.argv
    sys.argv = [str(script), *_with_located_config(args)]
    try:
        run_cli(module.main, module.CONFIG_CLASSES)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chat"]:  # interactive, run here: the model path is relative to the caller's directory
        from llm_recipes.chat import main as chat_main

        return chat_main(argv[1:])
    if argv[:1] == ["serve"]:  # runs here, like chat: the model path is relative to the caller's directory
        return serve_main(argv[1:])
    if argv[:1] == ["update"]:  # runs here; it launches its DPO and evaluate stages itself, each as a pipeline does
        return run_here("update", argv[1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "size":
            from llm_recipes.sizing import main as sizing_main

            sizing_main(rest)
            return 0
        if args.command == "monitor":
            from llm_recipes.serving.monitor import main as monitor_main

            monitor_main(rest)
            return 0
        from llm_recipes.pipeline import locate, run_pipeline, run_stage_process

        if args.command in ("toy", "run"):
            if rest:
                parser.error(f"unrecognised arguments: {' '.join(rest)}")
            path = str(PROJECT_ROOT / TOY_PIPELINE) if args.command == "toy" else locate(args.pipeline, PROJECT_ROOT)
            run_pipeline(path, args.from_stage, args.until_stage, args.force, verbose=args.verbose, seed=args.seed)
            return 0
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stage = get_stage(args.command)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               locate(args.accelerate_config, PROJECT_ROOT), str(stage.script), *_with_located_config(rest)]
    return run_stage_process(command, env=dict(os.environ))  # its own process group: signals reach every rank


if __name__ == "__main__":
    raise SystemExit(main())
