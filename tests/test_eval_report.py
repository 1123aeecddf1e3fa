"""The report: Markdown and a self-contained HTML page with tables and plots, rendered in real headless Chromium
(screenshot, page renders, no missing images); training curves read from trainer_state.json."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from llm_recipes.evaluation.browser import render_check, screenshot
from llm_recipes.evaluation.curves import read_curves
from llm_recipes.evaluation.report import write_report


def _gap(g):
    return {"gap": g, "abs_gap": abs(g), "ci_low": g - 0.1, "ci_high": g + 0.1, "significant": abs(g) > 0.1, "n": 10,
            "terms": ["man", "woman"]}


def _rates(r, h):
    return {"n": 30, "refusal_rate": r, "refusal_rate_ci_low": r / 2, "refusal_rate_ci_high": min(1, r + 0.2),
            "harmful_compliance_rate": h, "harmful_compliance_rate_ci_low": h / 2,
            "harmful_compliance_rate_ci_high": min(1, h + 0.2)}


@pytest.fixture()
def model_dirs(tmp_path):
    sft, dpo = tmp_path / "sft", tmp_path / "dpo"
    (sft / "checkpoint-20").mkdir(parents=True)  # curves from the latest checkpoint when the final folder has none
    (sft / "checkpoint-20" / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": 10, "loss": 3.0, "learning_rate": 1e-3}, {"step": 20, "loss": 2.0, "eval_loss": 2.2},
        {"step": 20, "train_loss": 2.5, "train_runtime": 9.0}]}))
    dpo.mkdir()
    (dpo / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": s, "loss": 0.7 - 0.01 * s, "rewards/margins": 0.05 * s, "objective/kl": 0.01 * s} for s in (5, 10, 15)]}))
    return sft, dpo


def test_curves_from_trainer_state(model_dirs, tmp_path):
    sft, dpo = model_dirs
    assert read_curves(sft) == {"loss": {"loss": [[10.0, 3.0], [20.0, 2.0]], "eval_loss": [[20.0, 2.2]],
                                         "train_loss": [[20.0, 2.5]]}}
    curves = read_curves(dpo)
    assert set(curves) == {"loss", "reward", "kl"} and curves["kl"]["objective/kl"][-1] == [15.0, 0.15]
    assert read_curves(tmp_path / "nothing") == {}


def test_curves_from_ppo_log(tmp_path):
    """The PPO stage logs one JSON line per update, with no trainer_state.json: reward and KL curves by update."""
    ppo = tmp_path / "ppo"
    ppo.mkdir()
    lines = [{"update": u, "episode": 32 * u, "objective/scores": 0.1 * u, "objective/kl": 0.5 * u,
              "objective/rlhf_reward": 0.1 * u - 0.05 * u, "policy/entropy": 1.4} for u in (1, 2, 3)]
    (ppo / "ppo_log.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    curves = read_curves(ppo)
    assert curves["kl"]["objective/kl"] == [[1.0, 0.5], [2.0, 1.0], [3.0, 1.5]]
    assert [p[0] for p in curves["reward"]["objective/scores"]] == [1.0, 2.0, 3.0]
    assert "update" not in str(curves) and "episode" not in str(curves)


def test_report_renders_in_headless_chromium(model_dirs, tmp_path):
    sft, dpo = model_dirs
    names = ["base", "sft", "dpo"]
    results = {
        "title": "Test report",
        "models": [{"name": n, "path": str(tmp_path / n)} for n in names],
        "benchmarks": {n: {"facts_mc": {"acc": 0.25 + 0.2 * i, "acc_norm": 0.3}, "facts_gen": {"exact_match": 0.1 * i},
                           "corpus_ppl": {"bits_per_byte": 2.0 - 0.3 * i}} for i, n in enumerate(names)},
        # dpo's refusal interval ends a hair below its rate (as rounding once made it), which plots as a zero bar
        "red_team": {n: {**_rates(0.1 * i, 0.5 - 0.1 * i), "judge": "keyword", "refusal_rate_ci_high": 0.1 * i - 1e-16,
                         "by_jailbreak": {"none": _rates(0.2 * i, 0.1), "roleplay": _rates(0.1, 0.3)}} for i, n in enumerate(names)},
        "bias": {n: {"loglik": {"gender": _gap(0.3 - 0.1 * i), "age": _gap(-0.05)}} for i, n in enumerate(names)},
        "comparison": {"baseline": "base", "scored_by": "reward model", "win_rates": {
            n: {"reward": {"win_rate": 0.6 + 0.1 * i, "ci_low": 0.5, "ci_high": 0.9, "wins": 6, "ties": 1, "losses": 3}}
            for i, n in enumerate(names[1:])}},
        "curves": {"base": {}, "sft": read_curves(sft), "dpo": read_curves(dpo)},
    }
    paths = write_report(results, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| facts_mc | acc | 0.250 | 0.450 | 0.650 |" in md and "![training_curves](report_files/training_curves.png)" in md
    for name in ("benchmarks", "red_team", "bias", "win_rate", "training_curves"):
        assert (tmp_path / "out" / "report_files" / f"{name}.png").stat().st_size > 1000
    html = (tmp_path / "out" / "report.html").read_text()
    assert "src='report_files" not in html and html.count("data:image/png;base64,") == 5  # self-contained

    check = render_check(paths["html"])
    assert check == {"images": 5, "broken": [], "tables": 4, "height": check["height"]} and check["height"] > 1500
    png = screenshot(paths["html"], tmp_path / "shot.png", height=1600)
    image = Image.open(png).convert("L")
    assert image.size == (1100, 1600)
    lo, hi = image.getextrema()
    assert lo < 60 and hi > 200  # text and plots on a white page, not a blank or error page
    assert sum(1 for count in image.histogram() if count) > 20


def test_a_missing_image_is_detected(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><table></table><img alt='gone' src='missing.png'></body></html>")
    assert render_check(page)["broken"] == ["gone"]


def test_report_says_which_sandbox_limits_held(tmp_path):
    """A code benchmark run with `allow_weaker_sandbox: true`: the report lists each sandbox limit and whether it
    held on this machine, so a weaker run is visible to whoever reads the report, not only in results.json."""
    results = {"title": "t", "models": [{"name": "m", "path": "p"}], "benchmarks": {"m": {"humaneval": {"pass@1": 0.5}}},
               "code_sandbox_limits": {"memory_tree": False, "no_ptrace": True, "network_off": True}}
    write_report(results, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "Code sandbox" in markdown
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in markdown.splitlines()
            if line.startswith("| ") and line.count("|") == 3}
    assert rows["memory_tree"] == "NO" and rows["no_ptrace"] == "yes" and rows["network_off"] == "yes"
    assert "memory_tree" in (tmp_path / "report.html").read_text()
