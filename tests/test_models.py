"""Models: attention choice, new architectures, loading (dtype, safetensors only, no remote code), 4-bit QLoRA
on CPU and LoRA's default targets. All in-process on the session's tiny model (2 layers, hidden 64)."""

from __future__ import annotations

import os
import shutil
from dataclasses import fields

import pytest
import torch

from llm_recipes import models
from llm_recipes.model_config import ModelArguments
from llm_recipes.errors import ConfigError

LINEAR_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return models.load_tokenizer(ModelArguments(model_name_or_path=str(tiny_model_dir)))


# ----------------------------------------------------------------------------------------------- attention
def test_attention_auto_is_sdpa_without_flash_attn():
    assert not models.flash_attn_available()  # no flash-attn, no CUDA on these machines
    assert models.select_attn_implementation("auto") == "sdpa"
    assert models.select_attn_implementation(None) == "sdpa"


def test_attention_explicit_choice_is_kept(tiny_model_dir, tokenizer):
    assert models.select_attn_implementation("eager") == "eager"
    model = models.load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), attn_implementation="eager"), tokenizer)
    assert model.config._attn_implementation == "eager"


def test_flash_attention_without_flash_attn_is_a_config_error(tiny_model_dir, tokenizer):
    with pytest.raises(ConfigError, match="flash_attention_2"):
        models.select_attn_implementation("flash_attention_2")
    args = ModelArguments(model_name_or_path=str(tiny_model_dir), attn_implementation="flash_attention_2")
    with pytest.raises(ConfigError, match="attn_implementation"):
        models.load_model(args, tokenizer)


# ----------------------------------------------------------------------------------------------- new models
def test_named_sizes_and_overrides():
    tiny = models.get_architecture("tiny")
    assert (tiny.num_layers, tiny.hidden_size, tiny.num_heads) == (2, 64, 2)
    custom = models.get_architecture("tiny", num_layers=3, hidden_size=None)  # None = keep the size's value
    assert (custom.num_layers, custom.hidden_size) == (3, 64)
    from_scratch = models.get_architecture(None, hidden_size=96, num_heads=3, num_kv_heads=1)
    assert (from_scratch.hidden_size, from_scratch.num_heads, from_scratch.num_kv_heads) == (96, 3, 1)
    with pytest.raises(ConfigError, match="model_size: unknown size 'huge'"):
        models.get_architecture("huge")


def test_build_model_sizes_vocab_and_parameter_count(tokenizer):
    arch = models.get_architecture("tiny")
    model = models.build_model(arch, tokenizer)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (2, 64, 2, 128)
    assert cfg.vocab_size == len(tokenizer) == model.get_input_embeddings().weight.shape[0]
    assert cfg.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert cfg._attn_implementation == "sdpa"
    h, ff, layers, vocab = 64, 128, 2, len(tokenizer)
    per_layer = 4 * h * h + 3 * h * ff + 2 * h  # attention (no GQA), SwiGLU MLP, two RMSNorms
    assert model.num_parameters() == vocab * h + layers * per_layer + h  # tied embeddings, final norm
    # GQA: fewer key/value heads shrink k_proj and v_proj
    gqa = models.build_model(models.get_architecture("tiny", num_heads=4, num_kv_heads=2), tokenizer)
    assert gqa.model.layers[0].self_attn.k_proj.weight.shape == (2 * 16, 64)
    # default MLP width: 8/3 x hidden rounded up to 64
    default_ff = models.build_model(models.get_architecture(None, num_layers=1, hidden_size=96, num_heads=2, num_kv_heads=2), tokenizer)
    assert default_ff.config.intermediate_size == 256


@pytest.mark.parametrize(
    "overrides",
    [dict(hidden_size=64, num_heads=3, num_kv_heads=3), dict(hidden_size=64, num_heads=4, num_kv_heads=3)],
)
def test_bad_head_divisibility_is_a_config_error(tokenizer, overrides):
    with pytest.raises(ConfigError, match="architecture: hidden_size 64 must divide by num_heads"):
        models.build_model(models.get_architecture("tiny", **overrides), tokenizer)


def test_build_model_is_seeded(tokenizer):
    a = models.build_model(models.get_architecture("tiny"), tokenizer, seed=1)
    b = models.build_model(models.get_architecture("tiny"), tokenizer, seed=1)
    c = models.build_model(models.get_architecture("tiny"), tokenizer, seed=2)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


# ----------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_load_model_dtype(tiny_model_dir, tokenizer, dtype):
    model = models.load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype=dtype), tokenizer)
    assert model.dtype == getattr(torch, dtype)
    assert model.config._attn_implementation == "sdpa"
    ids = tokenizer("The capital", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits.float()).all()


def test_unknown_dtype_is_a_config_error(tiny_model_dir, tokenizer):
    with pytest.raises(ConfigError, match="dtype: unknown dtype 'float33'"):
        models.load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float33"), tokenizer)


def test_only_safetensors_weights_are_loaded(tiny_model_dir, tokenizer, tmp_path):
    model = models.load_model(ModelArguments(model_name_or_path=str(tiny_model_dir)), tokenizer)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_model_dir / "config.json", pickled)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"pickled.*only pickled weights \(pytorch_model.bin\)"):
        models.load_model(ModelArguments(model_name_or_path=str(pickled)), tokenizer)
    # the loader itself is also told to refuse pickles, whatever the folder check lets through
    assert models.model_load_kwargs(ModelArguments(model_name_or_path=str(tiny_model_dir)))["use_safetensors"] is True
    with pytest.raises(ConfigError, match="no such folder"):
        models.load_model(ModelArguments(model_name_or_path=str(tmp_path / "missing")), tokenizer)


def test_trust_remote_code_is_off_by_default(tiny_model_dir):
    from trl import SFTConfig

    defaults = {f.name: f.default for f in fields(SFTConfig)}
    assert defaults["trust_remote_code"] is False
    assert models.model_load_kwargs(ModelArguments(model_name_or_path=str(tiny_model_dir)))["trust_remote_code"] is False


def _to_pickle(safetensors_file, pickle_file):
    """transformers 5 and PEFT save safetensors only: an old pickled checkpoint is made by hand."""
    from safetensors.torch import load_file

    torch.save(load_file(safetensors_file), pickle_file)
    safetensors_file.unlink()


def _pickled_copy(source_dir, out, model_cls=None):
    """`source_dir`'s model saved as pickled `pytorch_model.bin` (what an old checkpoint holds), with its tokenizer."""
    from transformers import AutoModelForCausalLM

    model = (model_cls or AutoModelForCausalLM).from_pretrained(source_dir)  # (test setup: the library itself)
    model.save_pretrained(out)
    _to_pickle(out / "model.safetensors", out / "pytorch_model.bin")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source_dir / name, out)
    assert (out / "pytorch_model.bin").exists() and not list(out.glob("*.safetensors"))
    return out


def test_every_model_load_goes_through_the_one_loader():
    """`from_pretrained` of a model class (transformers or PEFT) appears only in models.py, whose loader passes
    use_safetensors=True and turns a bad path into a one-line error."""
    import re

    from conftest import REPO_ROOT

    call = re.compile(r"\b(AutoModel\w*|PeftModel|AutoPeftModel\w*|\w+For(CausalLM|SequenceClassification))\.from_pretrained\(")
    offenders = []
    for path in [*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "scripts").rglob("*.py")]:
        if path.name == "models.py" and path.parent.name == "llm_recipes":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0]
            if call.search(code) and not re.search(r"[\x27\x22].*from_pretrained", code):  # not inside a string
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}")
    assert offenders == []


def test_ppo_reference_with_pickled_weights_is_refused(tiny_model_dir, tmp_path):
    # PPO's ref_model_path went through load_causal_lm (then in alignment.py), which loaded pytorch_model.bin
    from llm_recipes import alignment

    pickled = _pickled_copy(tiny_model_dir, tmp_path / "ref")
    with pytest.raises(ConfigError, match=r"^ref_model_path: .*only pickled weights \(pytorch_model.bin\)"):
        models.load_causal_lm(str(pickled), key="ref_model_path")


def test_reward_model_with_pickled_weights_is_refused(tiny_model_dir, tmp_path):
    # the alignment evaluation loaded its reward model with a plain from_pretrained (pickles allowed)
    from transformers import AutoModelForSequenceClassification

    pickled = _pickled_copy(tiny_model_dir, tmp_path / "rm", AutoModelForSequenceClassification)
    with pytest.raises(ConfigError, match=r"^reward_model_path: .*only pickled weights"):
        models.load_pretrained(AutoModelForSequenceClassification, str(pickled), "reward_model_path")


def test_pickled_adapter_is_refused(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # (test setup)
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(adapter)
    loaded = models.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    assert "default" in loaded.peft_config and any("lora_A" in n for n, _ in loaded.named_parameters())  # loads
    _to_pickle(adapter / "adapter_model.safetensors", adapter / "adapter_model.bin")
    with pytest.raises(ConfigError, match="only pickled adapter weights"):
        models.check_local_weights(str(adapter))
    with pytest.raises(ConfigError, match="only safetensors are loaded"):
        models.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))


@pytest.mark.parametrize("keep_bytes", [100, 20, 4])
def test_truncated_safetensors_is_a_one_line_error(tiny_model_dir, tokenizer, tmp_path, keep_bytes):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - keep_bytes] if keep_bytes == 100 else data[:keep_bytes])
    with pytest.raises(ConfigError, match=r"model.safetensors: truncated or corrupt safetensors file") as err:
        models.load_model(ModelArguments(model_name_or_path=str(broken)), tokenizer)
    assert "\n" not in str(err.value)


def test_paths_that_are_no_model_are_one_line_errors(tiny_model_dir, toy_data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cases = {
        str(tmp_path / "nope"): "no such folder",
        "runs-that-do-not-exist/a/b": "no such folder",
        str(toy_data_dir / "sft"): r"not a model folder \(no config.json\)",  # a dataset folder
        "nobody-here/no-such-model": "cannot be loaded as a model",  # a Hub id, offline
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=f"^model_name_or_path: .*{message}") as err:
            models.load_pretrained(AutoModelForCausalLM, path)
        assert "\n" not in str(err.value)


def test_tokenizer_sources_are_checked(tiny_model_dir, toy_data_dir, tmp_path):
    # a folder without a tokenizer made transformers suggest installing sentencepiece
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, weights_only)
    with pytest.raises(ConfigError, match="^model_name_or_path: .*no tokenizer in the folder"):
        models.load_tokenizer(ModelArguments(model_name_or_path=str(weights_only)))
    with pytest.raises(ConfigError, match="^tokenizer_name_or_path: .*no such folder"):
        models.load_tokenizer(ModelArguments(model_name_or_path=str(tiny_model_dir),
                                             tokenizer_name_or_path=str(tmp_path / "tok")))
    with pytest.raises(ConfigError, match="^model_name_or_path: .*no tokenizer"):
        models.check_local_weights(str(weights_only), tokenizer=True)
    models.check_local_weights(str(tiny_model_dir), tokenizer=True)  # the good folder passes


# ----------------------------------------------------------------------------------------------- QLoRA / LoRA
def test_4bit_without_peft_is_a_config_error(tiny_model_dir, tokenizer):
    args = ModelArguments(model_name_or_path=str(tiny_model_dir), load_in_4bit=True)
    with pytest.raises(ConfigError, match="load_in_4bit/load_in_8bit: .*use_peft"):
        models.load_model(args, tokenizer)


def test_qlora_4bit_on_cpu_trains(tiny_model_dir, tokenizer):
    import bitsandbytes as bnb
    from peft import get_peft_model, prepare_model_for_kbit_training

    args = ModelArguments(model_name_or_path=str(tiny_model_dir), load_in_4bit=True, use_peft=True)
    model = models.load_model(args, tokenizer)
    linear4 = [name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 2 * len(LINEAR_NAMES)  # every projection of both layers is quantized
    assert model.model.layers[0].self_attn.q_proj.weight.quant_state is not None
    model = get_peft_model(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), models.peft_config(args))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    torch.manual_seed(0)
    batch = tokenizer(["The capital of Ardonia is Velan.", "The main export of Kara is tea."], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_lora_targets_all_linear_layers_by_default(tiny_model_dir, tokenizer):
    from peft import get_peft_model

    args = ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True)
    config = models.peft_config(args)
    assert config.target_modules == "all-linear"
    peft_model = get_peft_model(models.load_model(args, tokenizer), config)
    wrapped = {name.rsplit(".", 1)[-1] for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == LINEAR_NAMES  # every projection, and not the output head
    n_wrapped = sum(1 for _, m in peft_model.named_modules() if hasattr(m, "lora_A"))
    assert n_wrapped == 2 * len(LINEAR_NAMES)
    assert models.peft_config(ModelArguments(model_name_or_path=str(tiny_model_dir))) is None


# ----------------------------------------------------------------------------------------------- where a model comes from
@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapters") / "sft"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(out)
    return out


def _with_base(adapter_dir, out, base):
    import json

    shutil.copytree(adapter_dir, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(config))
    return str(out)


def test_resolve_model_kinds(tiny_model_dir, tmp_path):
    assert models.resolve_model("gpt2", "k").kind == "hub"  # the Hub is offline: no adapter config found for it
    assert models.resolve_model("someone/model", "k").kind == "hub"
    folder = models.resolve_model(str(tiny_model_dir), "k")
    assert (folder.kind, folder.path, folder.base) == ("folder", str(tiny_model_dir), None)
    (tmp_path / "weights.safetensors").write_bytes(b"")
    for path, message in {str(tmp_path / "nope"): "no such folder", "runs-here-not/a/b": "no such folder",
                          "./model": "no such folder", str(tmp_path / "weights.safetensors"): "a file, not a model folder"}.items():
        with pytest.raises(ConfigError, match=f"^k: .*{message}"):
            models.resolve_model(path, "k")
    with pytest.raises(ConfigError, match="^k: not set"):
        models.resolve_model(None, "k")


def test_adapter_base_rule(adapter_dir, tiny_model_dir, tmp_path):
    # as written (the absolute path peft saved), relative to the adapter folder, or a Hub id
    source = models.resolve_model(str(adapter_dir), "model_name_or_path")
    assert (source.kind, source.base, source.base_key) == ("adapter", str(tiny_model_dir), "model_name_or_path (adapter base)")
    shutil.copytree(tiny_model_dir, tmp_path / "base")
    relative = models.resolve_model(_with_base(adapter_dir, tmp_path / "runs" / "sft", "../../base"), "m")
    assert os.path.samefile(relative.base, tmp_path / "base") and relative.base_is_local
    hub = models.resolve_model(_with_base(adapter_dir, tmp_path / "on_gpt2", "gpt2"), "m")
    assert (hub.kind, hub.base, hub.base_is_local) == ("adapter", "gpt2", False)
    # base_model_name_or_path replaces the adapter's base, and is the key named for it
    moved = _with_base(adapter_dir, tmp_path / "moved", "/training/machine/base")
    with pytest.raises(ConfigError) as err:
        models.resolve_model(moved, "model_name_or_path")
    assert str(err.value) == (f"model_name_or_path: {moved}: adapter without its base: '/training/machine/base' "
                              "(adapter_config.json: base_model_name_or_path) is not a model folder here; set "
                              "base_model_name_or_path to the base model the adapter was trained on")
    fixed = models.resolve_model(moved, "model_name_or_path", base_override=str(tiny_model_dir))
    assert (fixed.base, fixed.base_key) == (str(tiny_model_dir), "base_model_name_or_path")
    with pytest.raises(ConfigError, match=r"'\./nowhere' \(base_model_name_or_path\)"):
        models.resolve_model(moved, "model_name_or_path", base_override="./nowhere")
