"""The guard in front of vLLM's OpenAI server (recipes/serve/serve_vllm.yaml): needs a CUDA GPU and vllm
(`pip install 'llm-recipes[serve-gpu]'`). The same checks run on CPU against transformers' app as the upstream in
tests/test_serve.py::test_the_guard_in_front_of_another_server_over_http."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM serving needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("vllm")

import openai  # noqa: E402

from llm_recipes.serving.config import ServeArguments  # noqa: E402
from llm_recipes.serving.server import serve_in_thread  # noqa: E402

FILTERS = {"toxicity": {"words": ["grobnak"], "min_hits": 1, "action": "block"}, "pii": {"action": "redact"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
                                "--port", str(port), "--dtype", "float16", "--gpu-memory-utilization", "0.2",
                                "--max-model-len", "512", "--enforce-eager"])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                pytest.fail(f"vllm exited with status {process.returncode}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_guard_in_front_of_vllm(vllm_server, tiny_model_dir, tmp_path):
    log = tmp_path / "requests.jsonl"
    args = ServeArguments(model_name_or_path=str(tiny_model_dir), upstream=vllm_server, port=0, input_filters=FILTERS,
                          max_tokens=8, log_file=str(log))
    with serve_in_thread(args) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "What is the capital of Vorland?"}]
        reply = client.chat.completions.create(model="any", messages=messages, max_tokens=5, temperature=0)
        assert reply.choices[0].message.content and reply.usage.completion_tokens <= 5
        chunks = list(client.chat.completions.create(model="any", messages=messages, max_tokens=5, stream=True))
        assert len({c.id for c in chunks}) == 1
        assert httpx.post(f"{url}/feedback", json={"request_id": reply.id, "rating": 1}).status_code == 200
        blocked = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "you grobnak"}])
        assert blocked.choices[0].finish_reason == "content_filter"
        sampled = {client.chat.completions.create(model="any", messages=messages, max_tokens=8, temperature=1.5,
                                                  seed=s).choices[0].message.content for s in range(4)}
        assert len(sampled) > 1
