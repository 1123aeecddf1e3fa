"""Export and release: adapter merges (LoRA, QLoRA), quantized variants that reload, size and perplexity,
the lineage card, the chat command in a pseudo-terminal, and a push through huggingface_hub to a local
stand-in of the Hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, run_script
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_recipes import export
from llm_recipes.hub import mark_complete, read_marker, write_model_card

TEXT = "The capital of Zorvania is Tamqua. Its population is about four million people."


def _ids(tokenizer_dir) -> torch.Tensor:
    return AutoTokenizer.from_pretrained(tokenizer_dir)(TEXT, return_tensors="pt")["input_ids"]


@torch.no_grad()
def _logits(model, ids) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids).logits.float()


def _make_adapter(base_dir: Path, out: Path, quantized: bool) -> Path:
    """A LoRA adapter with random, non-zero A and B (a trained adapter's shape, without training time),
    on the full-precision base or on the base loaded 4-bit NF4 (QLoRA), saved with the tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig

    kwargs = {}
    if quantized:
        kwargs = dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                             bnb_4bit_compute_dtype=torch.float32),
                      device_map={"": "cpu"}, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return _make_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora"), quantized=False)


@pytest.fixture(scope="module")
def qlora_dir(tiny_model_dir, tmp_path_factory) -> Path:
    out = _make_adapter(tiny_model_dir, tmp_path_factory.mktemp("qlora"), quantized=True)
    recipe = out / "recipe.yaml"  # what an SFT QLoRA recipe says; the card carries it, `auto` reads it
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\nuse_peft: true\nload_in_4bit: true\nbnb_4bit_quant_type: nf4\n")
    write_model_card(out, stage="sft", base_model=str(tiny_model_dir), datasets=[], metrics={}, recipe_path=str(recipe))
    return out


def test_lora_merge_equals_base_plus_adapter(lora_dir, tiny_model_dir, tokenizer_dir):
    from peft import PeftModel

    ids = _ids(tokenizer_dir)
    merged, _, info = export.load_merged(str(lora_dir))
    assert info["adapter"] and info["base_quantization"] == "none"
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_dir)
    base_only = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    assert (_logits(reference, ids) - base_only).abs().max() > 1e-2  # the adapter does change the model
    assert (_logits(merged, ids) - _logits(reference, ids)).abs().max() < 1e-4  # fp32 summation order only


def test_qlora_merge_into_dequantised_base(qlora_dir, tiny_model_dir, tokenizer_dir):
    """The merged model is the function QLoRA trained (adapter on the 4-bit base), in full precision.

    Weights: each merged matrix is exactly bitsandbytes' dequantised NF4 weight plus the adapter's update.
    Logits: against the adapter on the 4-bit model the only difference left is bitsandbytes' CPU 4-bit
    kernel, which does not compute exactly x @ dequant(W) (measured here on the base alone, ~0.3% of the
    logits); against the adapter on the original full-precision base it is the base's quantization error
    (also measured here). Each bound is the measured difference with 50% slack plus 1e-5 for fp32 rounding.
    peft's merge on the 4-bit model itself re-quantizes base + update: far further from what was trained.
    """
    import bitsandbytes as bnb
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import BitsAndBytesConfig

    ids = _ids(tokenizer_dir)
    merged, _, info = export.load_merged(str(qlora_dir))  # base_quantization auto: from the card's recipe
    assert info["base_quantization"] == "nf4" and info["dtype"] == "float32"
    assert all(p.dtype == torch.float32 for p in merged.parameters())

    def four_bit():
        return AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, dtype=torch.float32, device_map={"": "cpu"},
            quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))

    qlora = PeftModel.from_pretrained(four_bit(), qlora_dir)
    merged_weights = dict(merged.named_parameters())
    checked = 0
    for name, module in qlora.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.base_layer.weight
            expected = bnb.functional.dequantize_4bit(weight.data, weight.quant_state) + module.get_delta_weight("default")
            key = name.removeprefix("base_model.model.") + ".weight"
            assert torch.allclose(merged_weights[key], expected, atol=1e-6), key
            checked += 1
    assert checked == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)

    merged_logits = _logits(merged, ids)
    trained_function = _logits(qlora, ids)
    dequantised_base = four_bit().dequantize(dtype=torch.float32)
    kernel_error = (_logits(four_bit(), ids) - _logits(dequantised_base, ids)).abs().max().item()
    assert (merged_logits - trained_function).abs().max().item() <= 1.5 * kernel_error + 1e-5

    fp_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    quant_error = (_logits(dequantised_base, ids) - _logits(fp_base, ids)).abs().max().item()
    on_fp_base = _logits(PeftModel.from_pretrained(fp_base, qlora_dir), ids)
    assert (merged_logits - on_fp_base).abs().max().item() <= 1.5 * quant_error + 1e-5

    requantized = _logits(PeftModel.from_pretrained(four_bit(), qlora_dir).merge_and_unload(), ids)
    assert (requantized - trained_function).abs().max() > 5 * (merged_logits - trained_function).abs().max()


def test_adapter_with_missing_base_fails_naming_the_key(lora_dir, tmp_path):
    broken = tmp_path / "adapter"
    shutil.copytree(lora_dir, broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/old/training/machine/base"
    (broken / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(export.ConfigError, match="adapter_config.json: base_model_name_or_path"):
        export.load_merged(str(broken))


def test_variants_reload_generate_with_size_and_perplexity(lora_dir, toy_data_dir, tmp_path):
    texts = export.load_texts(str(toy_data_dir / "corpus"), "validation", "text", 8)
    out = tmp_path / "release"
    result = export.export_model(str(lora_dir), out, variants=list(export.VARIANTS), max_shard_size="100KB",
                                 texts=texts, max_length=128)
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    sizes = {name: info["weights_bytes"] for name, info in result["variants"].items()}
    assert sizes["bnb-nf4"] < sizes["bnb-int8"] < sizes["merged"] and sizes["torchao-int8"] < sizes["merged"]
    expected_method = {"bnb-nf4": "bitsandbytes", "bnb-int8": "bitsandbytes", "torchao-int8": "torchao"}
    ids = AutoTokenizer.from_pretrained(out)("Tamqua is", return_tensors="pt")["input_ids"]
    for name, info in result["variants"].items():
        folder = out / info["path"]
        config = json.loads((folder / "config.json").read_text())
        if name != "merged":
            assert config["quantization_config"]["quant_method"] == expected_method[name]
        model = AutoModelForCausalLM.from_pretrained(folder, device_map={"": "cpu"})
        generated = model.generate(ids, max_new_tokens=4, do_sample=False)
        assert generated.shape[1] == ids.shape[1] + 4
        assert 1 < info["perplexity"] < 10 * len(AutoTokenizer.from_pretrained(folder))
        assert abs(info["perplexity_delta"]) < 0.05 * result["variants"]["merged"]["perplexity"]
    assert result["variants"]["merged"]["perplexity_delta"] == 0


# ----------------------------------------------------------------------------------------------- chat
def _chat(model_dir: Path, *args: str):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "dumb"}
    return pexpect.spawn(sys.executable, ["-m", "llm_recipes.cli", "chat", str(model_dir), *args],
                         env=env, encoding="utf-8", timeout=120, cwd=str(REPO_ROOT))


def test_chat_streams_keeps_history_and_exits(lora_dir, tmp_path):
    """Two turns in a pseudo-terminal: each reply arrives in pieces and is the model's own (seeded) reply to
    the whole conversation so far; /exit ends with status 0."""
    pexpect = pytest.importorskip("pexpect")
    from transformers import set_seed

    from llm_recipes.chat import generation_kwargs, parse_args

    model_dir = tmp_path / "merged"
    export.export_model(str(lora_dir), model_dir, variants=[])
    # sampling (seeded): a random model's greedy reply repeats one byte token with no space to flush on
    options = ["--temperature", "1.0", "--top_p", "1.0", "--seed", "0", "--max_new_tokens", "60"]
    child = _chat(model_dir, *options)
    child.expect("you> ")
    questions, replies = ["What is the capital of Zorvania?", "And its population?"], []
    for question in questions:
        child.sendline(question)
        child.expect_exact(question)  # the terminal's echo
        child.expect_exact("assistant> ")
        chunks = []
        while "you> " not in "".join(chunks):  # read the reply as it arrives
            try:
                chunks.append(child.read_nonblocking(4096, timeout=60))
            except pexpect.TIMEOUT:
                pytest.fail(f"no prompt after the reply: {''.join(chunks)!r}")
        assert len(chunks) >= 3, f"reply did not stream: {chunks!r}"
        replies.append("".join(chunks).split("you> ")[0].strip())
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    kwargs = generation_kwargs(tokenizer, parse_args([str(model_dir), *options]))
    set_seed(0)
    history = []
    for question, streamed in zip(questions, replies):
        history.append({"role": "user", "content": question})
        enc = tokenizer.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**enc, **kwargs)
        expected = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert " ".join(streamed.split()) == " ".join(expected.split())
        history.append({"role": "assistant", "content": expected})


def test_chat_ctrl_d_exits_cleanly(tiny_model_dir):
    pexpect = pytest.importorskip("pexpect")
    child = _chat(tiny_model_dir)
    child.expect("you> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# ----------------------------------------------------------------------------------------------- release
def test_release_pushes_model_datasets_and_card_to_hub_standin(lora_dir, tiny_model_dir, toy_data_dir, tmp_path):
    """scripts/export.py with push_to_hub, through huggingface_hub's real upload code, against a local stand-in."""
    from hub_standin import HubStandIn

    data = tmp_path / "data"
    shutil.copytree(toy_data_dir, data)
    mark_complete(data, "toy_data", rows={"corpus": 1, "sft": 1})
    adapter = tmp_path / "sft"
    shutil.copytree(lora_dir, adapter)
    write_model_card(adapter, stage="sft", base_model=str(tiny_model_dir), datasets=[str(data / "sft")],
                     metrics={"train_loss": 1.5})
    mark_complete(adapter, "sft", base_model=str(tiny_model_dir), datasets=[str(data / "sft")], metrics={"train_loss": 1.5})
    out = tmp_path / "release"
    with HubStandIn() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_standin_token",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        proc = subprocess.run(
            [sys.executable, "scripts/export.py", "--model_name_or_path", str(adapter), "--quantize", "bnb-nf4",
             "--output_dir", str(out), "--push_to_hub", "true", "--hub_model_id", "me/toy-chat",
             "--eval_dataset", str(data / "corpus"), "--eval_max_samples", "4"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        model_files = hub.files("me/toy-chat")
        dataset_files = hub.files("me/toy-chat-sft", kind="dataset")
    assert hub.authorizations == {"Bearer hf_standin_token"}
    # every call answered; the only GET is the client's optional agent-registry fetch, which may fail
    assert {r for r in hub.requests if r[0] == "GET"} <= {("GET", "/api/agent-harnesses")}, hub.requests
    assert len(hub.validated) == 2  # the model card and the dataset card passed the metadata check
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "bnb-nf4/model.safetensors",
            "bnb-nf4/config.json", "llm_recipes.json"} <= set(model_files)
    assert model_files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert {"README.md", "data/train-00000-of-00001.parquet"} <= set(dataset_files)
    card = model_files["README.md"].decode()
    assert "me/toy-chat-sft" in card.split("---")[1]  # card metadata names the pushed dataset
    assert 'from_pretrained("me/toy-chat", subfolder="bnb-nf4")' in card
    assert "stage `sft`" in card and "train_loss" in card and "stage `toy_data`" in card
    assert read_marker(out)["stage"] == "export"


def test_release_without_hub_id_fails_before_any_work(lora_dir, tmp_path):
    import importlib.util

    from llm_recipes.export_config import ExportArguments

    spec = importlib.util.spec_from_file_location("export_script", REPO_ROOT / "scripts" / "export.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ExportArguments(model_name_or_path=str(lora_dir), push_to_hub=True, output_dir=str(tmp_path / "r"))
    with pytest.raises(export.ConfigError, match="^hub_model_id: required when push_to_hub is true$"):
        script.main(args)
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.*"))


# ----------------------------------------------------------------------------------------------- lineage
@pytest.mark.slow
def test_toy_chain_card_lists_every_stage_with_recipe_and_metrics(tmp_path):
    """The real stages, small: toy_data -> tokenizer -> base (pretrain, 1 step) -> sft (LoRA) -> export; the release card walks
    back through the markers and recipes to the data."""
    runs, recipes = tmp_path / "runs", tmp_path / "recipes"
    recipes.mkdir()
    stages = {
        "data": ("toy_data.py", {"output_dir": str(runs / "data"), "n_entities": 20}),
        "tokenizer": ("tokenizer.py", {"dataset_name": str(runs / "data/corpus"), "vocab_size": 400,
                                       "output_dir": str(runs / "tokenizer")}),
        "base": ("pretrain.py", {"tokenizer_name_or_path": str(runs / "tokenizer"), "model_size": "tiny",
                                 "dataset_name": str(runs / "data/corpus"), "max_steps": 1, "block_size": 64,
                                 "per_device_train_batch_size": 2, "report_to": "none", "save_strategy": "no",
                                 "output_dir": str(runs / "base")}),
        "sft": ("sft.py", {"model_name_or_path": str(runs / "base"), "dataset_name": str(runs / "data/sft"),
                           "use_peft": True, "lora_r": 4, "max_steps": 2, "per_device_train_batch_size": 4,
                           "max_length": 64, "report_to": "none", "save_strategy": "no", "eval_strategy": "no",
                           "output_dir": str(runs / "sft")}),
        "export": ("export.py", {"model_candidates": [str(runs / "dpo"), str(runs / "sft")], "quantize": ["bnb-nf4"],
                                 "eval_dataset": str(runs / "data/corpus"), "eval_max_samples": 4,
                                 "pipeline": str(tmp_path / "pipeline.yaml"), "output_dir": str(runs / "release")}),
    }
    pipeline = {"name": "mini", "stages": []}
    for name, (script, recipe) in stages.items():
        (recipes / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
        pipeline["stages"].append({"name": name, "script": f"scripts/{script}", "config": str(recipes / f"{name}.yaml"),
                                   "output": recipe["output_dir"]})
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    for name, (script, _) in stages.items():
        proc = run_script(script, "--config", str(recipes / f"{name}.yaml"))
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"

    card = (runs / "release" / "README.md").read_text()
    sections = card.split("## Lineage")[1].split("\n### ")[1:]
    order = [s.split("\n")[0] for s in sections]
    stage_titles = [t for t in order if t.split(". ", 1)[1].startswith("stage")]
    assert [t.split("`")[1] for t in stage_titles] == ["toy_data", "tokenizer", "pretrain", "sft", "export"]
    by_stage = {t.split("`")[1]: s for t, s in zip(order, sections) if "stage `" in t}
    for name in ("data", "tokenizer", "base", "sft", "export"):
        stage = {"data": "toy_data", "base": "pretrain"}.get(name, name)
        assert f"**Recipe:** `{recipes / name}.yaml`" in by_stage[stage]
    assert "**rows:**" in by_stage["toy_data"] and "**vocab_size:**" in by_stage["tokenizer"]
    assert "parameters=" in by_stage["pretrain"] and "train_loss=" in by_stage["sft"]
    assert "bnb-nf4_perplexity=" in by_stage["export"]
    marker = read_marker(runs / "release")
    assert marker["merge"]["adapter"] is True and marker["merge"]["base_model"] == str(runs / "base")
    reloaded = AutoModelForCausalLM.from_pretrained(runs / "release" / "bnb-nf4", device_map={"": "cpu"})
    assert reloaded.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, min_new_tokens=2).shape[1] == 5


# ----------------------------------------------------------------------------------------------- one resolver, one merge
def _hub_cache_with(monkeypatch, tmp_path: Path, repo: str, folder: Path) -> None:
    """A Hub cache holding `folder` as the snapshot of `repo`: with the Hub offline (as in every test) transformers
    loads `repo` from the cache, as it would on a machine that downloaded it before."""
    import huggingface_hub.constants

    cache = tmp_path / "hub_cache"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / ("0" * 40))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def _adapter_with_base(lora_dir: Path, out: Path, base: str) -> Path:
    shutil.copytree(lora_dir, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def test_adapter_on_a_hub_id_base_is_the_same_model_for_alignment_and_export(lora_dir, tiny_model_dir, tokenizer_dir,
                                                                             tmp_path, monkeypatch):
    """An adapter whose adapter_config.json names the Hub id `gpt2` as its base: the alignment stages called it
    'without its base' while export accepted it. A Hub id base is accepted everywhere and loaded from the Hub (here
    its cache, holding the tiny model as `gpt2`)."""
    from peft import PeftModel

    from llm_recipes import alignment, models

    adapter = _adapter_with_base(lora_dir, tmp_path / "adapter", "gpt2")
    _hub_cache_with(monkeypatch, tmp_path, "gpt2", tiny_model_dir)
    ids = _ids(tokenizer_dir)
    expected = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_dir), ids)

    models.check_local_weights(str(adapter))  # a stage's input check (the alignment stages' rule)
    from_alignment = models.load_causal_lm(str(adapter))
    from_export, _, info = export.load_merged(str(adapter))
    assert info["base_model"] == "gpt2"
    for merged in (from_alignment, from_export):
        assert (_logits(merged, ids) - expected).abs().max() < 1e-4


def test_adapter_with_a_missing_local_base_is_the_same_error_everywhere(lora_dir, tmp_path):
    from llm_recipes import alignment, models

    for i, base in enumerate(("/old/training/machine/base", "../moved/base", "runs/toy/base")):
        adapter = _adapter_with_base(lora_dir, tmp_path / f"adapter{i}", base)
        messages = set()
        for load in (models.check_local_weights, models.load_causal_lm, export.load_merged):
            with pytest.raises(export.ConfigError) as err:
                load(str(adapter))
            messages.add(str(err.value))
        assert len(messages) == 1, messages
        message = messages.pop()
        assert str(adapter) in message and base in message and "base_model_name_or_path" in message


def _lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if n.endswith("proj.weight")}


def test_lora_adapter_merges_to_the_same_model_on_every_path(lora_dir, tiny_model_dir, tokenizer_dir):
    from peft import PeftModel

    from llm_recipes import alignment, models
    from llm_recipes.model_config import AlignmentModelArguments
    from llm_recipes.evaluation.models import load_for_eval

    ids = _ids(tokenizer_dir)
    expected = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_dir), ids)
    args = AlignmentModelArguments(model_name_or_path=str(lora_dir), dtype="float32")
    tokenizer = models.load_tokenizer(args)
    start = alignment.start_model_args(args, tokenizer)  # reward, GRPO, RLOO: the merged start model
    policy, _, from_adapter = alignment.load_policy(args, tokenizer)  # DPO/PPO without use_peft: trained in full
    assert from_adapter
    paths = {
        "export": export.load_merged(str(lora_dir))[0],
        "models.load_causal_lm": models.load_causal_lm(str(lora_dir)),
        "models.load_pretrained": models.load_pretrained(AutoModelForCausalLM, str(lora_dir)),
        "start_model_args": models.load_pretrained(AutoModelForCausalLM, start.model_name_or_path),
        "load_policy": policy,
        "evaluation": load_for_eval(str(lora_dir))[0],
    }
    for name, model in paths.items():
        assert (_logits(model, ids) - expected).abs().max() < 1e-4, name


def test_qlora_adapter_merges_into_the_dequantised_base_on_every_path(qlora_dir, tiny_model_dir):
    """The alignment stages merged a QLoRA adapter into the full-precision base (a model that was never trained);
    export merges it into the dequantised 4-bit base. Every path now gives export's merge, weight for weight.
    (bitsandbytes' 4-bit runs on the CPU here, so the dequantisation itself is exercised.)"""
    from llm_recipes import alignment, models
    from llm_recipes.model_config import AlignmentModelArguments

    reference = _lora_weights(export.load_merged(str(qlora_dir))[0])
    full_precision = _lora_weights(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    args = AlignmentModelArguments(model_name_or_path=str(qlora_dir), dtype="float32")
    start = alignment.start_model_args(args, models.load_tokenizer(args))
    for name, model in {"models.load_causal_lm": models.load_causal_lm(str(qlora_dir)),
                        "start_model_args": models.load_pretrained(AutoModelForCausalLM, start.model_name_or_path)}.items():
        weights = _lora_weights(model)
        assert weights.keys() == reference.keys() and len(weights) == 14
        for key, value in weights.items():
            assert torch.allclose(value, reference[key], atol=1e-6), (name, key)
        # and not the adapter on the full-precision weights (the base's quantization error tells them apart)
        assert max((weights[k] - full_precision[k]).abs().max() for k in weights) > 1e-3


def test_qlora_reward_model_merges_into_the_dequantised_base(tiny_model_dir):
    """scripts/reward.py merged a LoRA reward model trained on the 4-bit base into a full-precision copy of the base."""
    import importlib.util

    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    from llm_recipes import models
    from llm_recipes.model_config import AlignmentModelArguments

    four_bit = AutoModelForSequenceClassification.from_pretrained(  # (test setup: the library itself)
        tiny_model_dir, num_labels=1, dtype=torch.float32, device_map={"": "cpu"},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    torch.manual_seed(2)
    trained = get_peft_model(four_bit, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules="all-linear",
                                                  init_lora_weights=False))
    expected = {}
    for name, module in trained.named_modules():
        if isinstance(module, LoraLayer) and hasattr(module.base_layer, "quant_state") or (
                isinstance(module, LoraLayer) and isinstance(module.base_layer, bnb.nn.Linear4bit)):
            weight = module.base_layer.weight
            expected[name.removeprefix("base_model.model.") + ".weight"] = (
                bnb.functional.dequantize_4bit(weight.data, weight.quant_state) + module.get_delta_weight("default"))
    assert len(expected) == 14

    spec = importlib.util.spec_from_file_location("reward_script", REPO_ROOT / "scripts" / "reward.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    start = AlignmentModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, load_in_4bit=True, dtype="float32")
    tokenizer = models.load_tokenizer(start)

    class Args:
        trust_remote_code = False

    merged = dict(script.merged_reward_model(trained, start, tokenizer, Args()).named_parameters())
    for key, value in expected.items():
        assert torch.allclose(merged[key], value, atol=1e-6), key
