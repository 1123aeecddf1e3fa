"""The code sandbox against hostile programs (real bubblewrap, real limits), and HumanEval's canonical solutions
through the same path as generated code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from llm_recipes.errors import ConfigError
from llm_recipes.evaluation.code import humaneval_path, pass_at_k, read_problems
from llm_recipes.evaluation.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(timeout=5, memory_mb=512, max_processes=32)


def test_ordinary_program_runs(sandbox):
    result = sandbox.run("import math\nprint(math.factorial(5))\nopen('scratch.txt', 'w').write('ok')")
    assert result.status == "ok" and result.stdout == "120\n"


def test_fork_bomb_is_contained(sandbox):
    start = time.monotonic()
    result = sandbox.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", timeout=3)
    assert not result.passed and time.monotonic() - start < 10
    # nothing of it survives: the host still starts processes and no sandbox cgroup is left behind
    assert subprocess.run(["true"]).returncode == 0
    if sandbox.cgroup_root is not None:
        assert not list(sandbox.cgroup_root.glob("llm_recipes_sandbox_*"))


def test_process_count_is_limited(sandbox):
    program = ("import os, time\nn = 0\nfor _ in range(200):\n    try:\n        if os.fork() == 0:\n"
               "            time.sleep(5); os._exit(0)\n        n += 1\n    except OSError:\n        break\nprint(n, flush=True)\nos._exit(0)\n")
    result = sandbox.run(program)
    assert result.status == "ok" and int(result.stdout) < 32


def test_network_is_unreachable(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(4)
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(server)))
    thread.start()
    program = (f"import socket\nfor host in ('127.0.0.1', '1.1.1.1'):\n    try:\n"
               f"        socket.create_connection((host, {port}), timeout=2); print('connected', host)\n"
               f"    except OSError as err:\n        print('blocked', host)\n")
    result = sandbox.run(program)
    thread.join()
    server.close()
    assert "connected" not in result.stdout and result.stdout.count("blocked") == 2
    assert accepted == [None]


def _accept(server):
    try:
        return server.accept()
    except OSError:
        return None


def test_writes_to_the_host_are_impossible(sandbox, tmp_path):
    target = tmp_path / "owned.txt"
    python_dir = os.path.dirname(os.__file__)
    program = (f"import os\nfor path in [{str(target)!r}, {python_dir + '/owned.py'!r}, '/etc/owned', '/usr/owned']:\n"
               f"    try:\n        open(path, 'w').write('x'); print('wrote', path)\n    except OSError:\n        print('denied')\n")
    result = sandbox.run(program)
    assert "wrote" not in result.stdout and result.stdout.count("denied") == 4
    assert not target.exists() and not os.path.exists(python_dir + "/owned.py")


def test_memory_blow_up_is_stopped(sandbox):
    start = time.monotonic()
    result = sandbox.run("chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 2**20))\n")
    assert result.status == "error" and "MemoryError" in result.stderr
    assert time.monotonic() - start < 5


def test_infinite_loop_times_out(sandbox):
    start = time.monotonic()
    result = sandbox.run("while True:\n    pass\n", timeout=1.5)
    assert result.status == "timeout" and time.monotonic() - start < 5


def test_killing_the_parent_fails(sandbox):
    program = (f"import os, signal\nfor pid in (os.getppid(), {os.getpid()}, {os.getppid()}, -1):\n"
               f"    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n")
    result = sandbox.run(program)
    assert result.status in ("ok", "killed")  # at most it killed itself (kill -1 inside its own PID namespace)
    assert sandbox.run("print('still here')").stdout == "still here\n"  # the evaluator lives on


def test_environment_is_empty(sandbox, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    result = sandbox.run("import os\nprint(sorted(os.environ))")
    assert "HF_TOKEN" not in result.stdout


def test_missing_bwrap_is_a_clear_error_unless_opted_out(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="bubblewrap"):
        Sandbox()
    unsafe = Sandbox(timeout=5, allow_unsandboxed=True, python=sys.executable)
    assert not unsafe.sandboxed and unsafe.run("print(2 + 2)").stdout == "4\n"


def test_pass_at_k_counts_passing_candidates():
    problems = [{"prompt": "def f():\n", "test": "def check(fn):\n    assert fn() == 1\n", "entry_point": "f"}]
    scores = pass_at_k(problems, [["    return 1\n", "    return 2\n", "    while True: pass\n"]], k=(1, 3), timeout=2)
    assert scores["pass@1"] == pytest.approx(1 / 3) and scores["pass@3"] == 1.0
    assert [r["status"] for r in scores["results"][0]] == ["ok", "error", "timeout"]


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_164_of_164():
    problems = read_problems(humaneval_path())
    assert len(problems) == 164
    scores = pass_at_k(problems, [[p["canonical_solution"]] for p in problems], k=(1,), timeout=20, num_workers=2)
    failed = [p["task_id"] for p, r in zip(problems, scores["results"]) if r[0]["status"] != "ok"]
    assert failed == [] and scores["pass@1"] == 1.0
    # and a wrong solution fails its tests through the same path
    assert pass_at_k(problems[:1], [["    return None\n"]], timeout=20)["pass@1"] == 0.0
