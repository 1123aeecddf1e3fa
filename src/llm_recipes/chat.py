"""`llm-recipes chat <model>`: talk to a model in the terminal, through its own chat template.

Replies stream token by token (transformers' TextIteratorStreamer); the conversation is kept and sent whole
each turn. /exit, /quit or Ctrl-D end the session; /reset clears the history; Ctrl-C stops a reply.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from llm_recipes.errors import first_line

HELP = "commands: /exit or /quit (or Ctrl-D) ends, /reset clears the conversation, Ctrl-C stops a reply"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="llm-recipes chat", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model folder or Hub id (a release folder, or one of its variant subfolders)")
    p.add_argument("--subfolder", default="", help="variant inside the model repo/folder, e.g. bnb-nf4")
    p.add_argument("--system", default=None, help="system message that opens the conversation")
    p.add_argument("--max_new_tokens", type=int, default=256, help="longest reply, in tokens")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 answers greedily")
    p.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (repeatable replies)")
    return p.parse_args(argv)


def load(model: str, subfolder: str = ""):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.models import load_pretrained
    from llm_recipes.training import cpu_threads

    if not torch.cuda.is_available():
        torch.set_num_threads(cpu_threads())
    tokenizer = AutoTokenizer.from_pretrained(model, subfolder=subfolder)
    if not tokenizer.chat_template:
        raise SystemExit(f"error: {model}: the tokenizer has no chat template (chat_template.jinja / tokenizer_config.json)")
    lm = load_pretrained(AutoModelForCausalLM, model, "model", subfolder=subfolder,
                         device_map={"": 0 if torch.cuda.is_available() else "cpu"})
    lm.eval()
    return lm, tokenizer


def generation_kwargs(tokenizer, args: argparse.Namespace) -> dict:
    """Length, stop token and sampling settings of a reply (greedy when temperature is 0)."""
    sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p} if args.temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return dict(max_new_tokens=args.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, **sampling)


def reply(model, tokenizer, history: list[dict], args: argparse.Namespace, out=sys.stdout) -> str:
    """Generate the assistant's next turn, printing it as it streams; returns the text."""
    from transformers import (
        StoppingCriteria,
        StoppingCriteriaList,
        TextIteratorStreamer,
    )

    stop = threading.Event()

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return stop.is_set()

    enc = tokenizer.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(**enc, streamer=streamer, stopping_criteria=StoppingCriteriaList([Stop()]),
                  **generation_kwargs(tokenizer, args))
    errors: list[BaseException] = []

    def run():
        try:
            model.generate(**kwargs)
        except BaseException as err:  # shown in the main thread
            errors.append(err)
            streamer.on_finalized_text("", stream_end=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pieces = []
    try:
        for piece in streamer:
            pieces.append(piece)
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        stop.set()
        out.write(" [stopped]")
    thread.join()
    out.write("\n")
    out.flush()
    if errors:
        raise errors[0]
    return "".join(pieces).strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    try:
        model, tokenizer = load(args.model, args.subfolder)
    except OSError as err:
        print(f"error: {args.model}: cannot load the model ({first_line(err)})", file=sys.stderr)
        return 2
    if args.seed is not None:
        from transformers import set_seed

        set_seed(args.seed)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    print(f"chatting with {args.model}{'/' + args.subfolder if args.subfolder else ''} ({HELP})", flush=True)
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D / Ctrl-C at the prompt
            print()
            return 0
        command = text.strip()
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            history = list(system)
            print("(conversation cleared)", flush=True)
            continue
        if command.startswith("/"):
            print(f"unknown command {command} ({HELP})", flush=True)
            continue
        if not command:
            continue
        history.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        history.append({"role": "assistant", "content": reply(model, tokenizer, history, args)})


if __name__ == "__main__":
    raise SystemExit(main())
