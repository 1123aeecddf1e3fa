"""The benchmark scripts start as documented: the toy pipeline benchmark runs a slice in its own copy of the tree
(never touching runs/toy), and the GPU QLoRA benchmark stops with a message where there is no CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


def test_toy_pipeline_benchmark_runs_a_slice_in_its_own_tree(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "toy_pipeline.py"), "--until", "data",
                           "--workdir", str(work)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((work / "toy_pipeline.json").read_text())  # a slice is saved beside it, not in results/
    assert [s["stage"] for s in result["stages"]] == ["data"] and result["stages"][0]["ok"]
    assert not result["complete"] and not result["meets_goal"]
    assert result["machine"]["cores"] == os.cpu_count() and result["total_seconds"] > 0
    assert (work / "runs" / "toy" / "data" / "llm_recipes.json").is_file()
    assert "| data |" in (work / "toy_pipeline.md").read_text()


def test_qlora_benchmark_without_cuda_says_so():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "qlora_8b_gpu.py")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA GPU here" in proc.stderr and "Traceback" not in proc.stderr
    assert "NOT RUN" in (REPO_ROOT / "benchmarks" / "results" / "qlora_8b_gpu.md").read_text()


def test_real_formats_benchmark_runs_a_subset_and_every_figure_agrees(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = str(REPO_ROOT / "benchmarks" / "real_formats.py")
    only = ["--only", "alpaca,book.txt:paragraph"]
    proc = subprocess.run([sys.executable, script, *only, "--output-dir", str(tmp_path)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "real_formats.json").read_text())
    by_format = {r["format"]: r for r in result["rows"]}
    assert set(by_format) == {"alpaca", "book.txt:paragraph"} and all(r["agree"] for r in result["rows"])
    assert (by_format["alpaca"]["rows_in"], by_format["alpaca"]["rows_used"]) == (6, 6)  # 6 written, all usable
    assert by_format["book.txt:paragraph"]["rows_used"] == 90  # 100 paragraphs, the first tenth held out
    assert "| alpaca | sft | 6 | 6 |" in (tmp_path / "real_formats.md").read_text()
    assert result["machine"]["cores"] == os.cpu_count()
    unknown = subprocess.run([sys.executable, script, "--only", "alpaca,nope", "--output-dir", str(tmp_path / "x")],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown case(s) nope" in unknown.stderr and not (tmp_path / "x").exists()


@pytest.mark.slow  # ~30 s, most of it importing transformers and the stage modules in the subprocess
def test_serve_load_benchmark_runs_both_sides_without_errors(tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "serve_load.py"), "--model", str(tiny_model_dir),
                           "--clients", "2", "--seconds", "2", "--rounds", "1", "--max-tokens", "4",
                           "--output-dir", str(tmp_path)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "serve_load.json").read_text())
    for side in ("bare", "guarded"):
        figures = result[side]
        assert figures["errors"] == 0 and figures["ok"] == figures["requests"] > 0, figures
        latency = figures["latency_s"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
        assert figures["throughput_rps"] == pytest.approx(figures["ok"] / figures["seconds"])
    # every request the guarded side answered is in its log, and one warm-up request more
    assert result["guarded_requests_logged"] == result["guarded"]["requests"] + 1
    assert result["overhead_latency_ratio"] == pytest.approx(
        result["guarded"]["latency_s"]["mean"] / result["bare"]["latency_s"]["mean"])
    assert "| guarded |" in (tmp_path / "serve_load.md").read_text()
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "serve_load.py"), "--clients", "0",
                          "--output-dir", str(tmp_path / "x")], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--clients" in bad.stderr and not (tmp_path / "x").exists()
