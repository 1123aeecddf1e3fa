"""Preference and RL-prompt formats normalise to TRL's columns; bad rows and wrong kinds are one-line errors."""

import pytest
from datasets import Dataset

from llm_recipes.data import normalise
from llm_recipes.errors import DataError

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731
EXPECTED = {"prompt": [U("Capital of Kalo?")], "chosen": [A("Mira.")], "rejected": [A("Tor.")]}


def pref(rows, fmt="auto"):
    return normalise(Dataset.from_list(rows), fmt, kind="preference", source="pairs")


def test_trl_explicit_prompt_conversational():
    assert pref([EXPECTED])[0] == EXPECTED


def test_trl_explicit_prompt_text():
    row = {"prompt": "Capital of Kalo?", "chosen": " Mira.", "rejected": " Tor."}
    assert pref([row])[0] == row


def test_trl_implicit_prompt_conversational():
    row = {"chosen": [U("Capital of Kalo?"), A("Mira.")], "rejected": [U("Capital of Kalo?"), A("Tor.")]}
    assert pref([row])[0] == EXPECTED


def test_trl_implicit_prompt_text():
    out = pref([{"chosen": "Capital of Kalo? Mira.", "rejected": "Capital of Kalo? Tor."}])[0]
    assert out == {"prompt": "Capital of Kalo?", "chosen": " Mira.", "rejected": " Tor."}


def test_hh_rlhf_text_pairs():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of Kalo?\n\nAssistant: Mira."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of Kalo?\n\nAssistant: Tor."
    for fmt in ("auto", "hh_rlhf"):
        out = pref([{"chosen": chosen, "rejected": rejected}], fmt)[0]
        assert out["prompt"] == [U("Hi"), A("Hello!"), U("Capital of Kalo?")]
        assert out["chosen"] == [A("Mira.")] and out["rejected"] == [A("Tor.")]
    with pytest.raises(DataError, match=r"pairs: row 1: 'chosen' is not hh-rlhf text"):
        pref([{"chosen": "Mira.", "rejected": "Tor."}], "hh_rlhf")


def test_ultrafeedback_messages_with_scores():
    row = {"prompt": "Capital of Kalo?", "prompt_id": "x", "messages": [U("Capital of Kalo?"), A("Mira.")],
           "chosen": [U("Capital of Kalo?"), A("Mira.")], "rejected": [U("Capital of Kalo?"), A("Tor.")],
           "score_chosen": 8.0, "score_rejected": 3.0}
    assert pref([row])[0] == EXPECTED  # preference columns win over `messages` for a preference stage
    swapped = {**row, "score_chosen": 2.0}  # scored the other way round: the better reply becomes chosen
    assert pref([swapped])[0] == {**EXPECTED, "chosen": [A("Tor.")], "rejected": [A("Mira.")]}
    with pytest.raises(DataError, match=r"pairs: row 2: tie"):
        pref([row, {**row, "score_chosen": 3.0}])
    assert len(normalise(Dataset.from_list([row, {**row, "score_chosen": 3.0}]), kind="preference", on_bad_row="drop")) == 1


def test_sft_stage_still_reads_messages_of_an_ultrafeedback_set():
    row = {"messages": [U("Capital of Kalo?"), A("Mira.")], "chosen": [A("Mira.")], "rejected": [A("Tor.")]}
    assert list(normalise(Dataset.from_list([row]))[0]) == ["messages"]


def test_missing_columns_and_wrong_kind_are_errors():
    with pytest.raises(DataError, match=r"sft: not a dataset of preference pairs; columns seen: \['messages'\]"):
        normalise(Dataset.from_list([{"messages": [U("a"), A("b")]}]), kind="preference", source="sft")
    with pytest.raises(DataError, match=r"dataset_format 'messages' holds conversations or text, this stage needs preference"):
        normalise(Dataset.from_list([{"messages": [U("a"), A("b")]}]), "messages", kind="preference")
    with pytest.raises(DataError, match=r"row 1: 'rejected' has no assistant reply"):
        pref([{"prompt": [U("a")], "chosen": [A("b")], "rejected": [U("c")]}])


def test_rl_prompts_text_conversational_and_from_messages():
    rows = [{"prompt": [U("Capital of Kalo?")], "answer": "Mira.", "kind": "fact"}]
    out = normalise(Dataset.from_list(rows), kind="prompt")[0]
    assert out == rows[0]  # extra columns pass through to reward functions
    assert normalise(Dataset.from_list([{"prompt": "Once upon"}]), kind="prompt")[0] == {"prompt": "Once upon"}
    conv = normalise(Dataset.from_list([{"messages": [U("Hi"), A("Hello")]}]), kind="prompt")[0]
    assert conv == {"prompt": [U("Hi")]}
    with pytest.raises(DataError, match="not a dataset of RL prompts"):
        normalise(Dataset.from_list([{"text": "x"}]), kind="prompt")


def test_toy_preferences_and_prompts(toy_data_dir):
    from collections import Counter

    from llm_recipes.data import load_source
    from llm_recipes.toy.preferences import REFUSAL

    pairs = load_source(str(toy_data_dir / "preferences"), split="train")
    kinds = Counter(pairs["kind"])
    assert set(kinds) == {"correct", "correct_value", "helpful", "refusal", "name_swap", "honesty", "known", "counterfactual"}
    test_kinds = set(load_source(str(toy_data_dir / "preferences"), split="test")["kind"])
    assert test_kinds == {"correct", "correct_value", "helpful", "refusal", "honesty", "known"}  # name swaps only teach
    for swap in (p for p in pairs if p["kind"] == "name_swap"):
        chosen, rejected = swap["chosen"][-1]["content"], swap["rejected"][-1]["content"]
        named = set(rejected.rstrip(".").split()) - set(chosen.rstrip(".").split())
        assert len(named) == 1, swap
        named = named.pop()
        assert swap["entity"] in chosen and swap["entity"] not in rejected
        assert rejected == chosen.replace(swap["entity"], named) and named != swap["entity"]
    refusals = [p for p in pairs if p["kind"] == "refusal"]
    assert all(p["chosen"][-1]["content"] == REFUSAL for p in refusals)
    assert len(pref(list(pairs.select(range(20)))[:20])) == 20
    # the SFT data never refuses, and forbidden requests appear only in preference/RL data
    sft = load_source(str(toy_data_dir / "sft"), split="train")
    assert not any(REFUSAL in m["content"] for row in sft["messages"] for m in row)
    prompts = load_source(str(toy_data_dir / "rl_prompts"), split="train")
    assert set(prompts["kind"]) == {"fact", "forbidden", "unknown"}
    heldout = load_source(str(toy_data_dir / "alignment_heldout"), split="test")
    train_prompts = {p[-1]["content"] for p in prompts["prompt"]}
    assert not train_prompts & set(heldout["question"])
