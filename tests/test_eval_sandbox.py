"""The code sandbox against hostile programs (real bubblewrap, real limits), and HumanEval's canonical solutions
through the same path as generated code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path

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
    for parent in sandbox.cgroup_parents.values():
        assert not list(parent.glob("llm_recipes_sandbox_*"))


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


def test_code_scoring_starts_one_sandbox_per_limits_not_one_per_problem(monkeypatch):
    # lm-eval scores a code task one problem at a time; a sandbox's start (its probe run) costs about 0.2 s
    probes = []
    real_probe = Sandbox._probe
    monkeypatch.setattr(Sandbox, "_probe", lambda self: probes.append(self) or real_probe(self))
    problem = [{"prompt": "def f():\n", "test": "def check(fn):\n    assert fn() == 1\n", "entry_point": "f"}]
    first = pass_at_k(problem, [["    return 1\n"]], timeout=3.5)
    second = pass_at_k(problem, [["    return 2\n"]], timeout=3.5)
    assert (first["pass@1"], second["pass@1"]) == (1.0, 0.0)
    assert len(probes) == 1
    pass_at_k(problem, [["    return 1\n"]], timeout=4.5)  # other limits: a sandbox of their own
    assert len(probes) == 2 and probes[0].timeout == 3.5 and probes[1].timeout == 4.5


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_164_of_164():
    problems = read_problems(humaneval_path())
    assert len(problems) == 164
    scores = pass_at_k(problems, [[p["canonical_solution"]] for p in problems], k=(1,), timeout=20, num_workers=2)
    failed = [p["task_id"] for p, r in zip(problems, scores["results"]) if r[0]["status"] != "ok"]
    assert failed == [] and scores["pass@1"] == 1.0
    # and a wrong solution fails its tests through the same path
    assert pass_at_k(problems[:1], [["    return None\n"]], timeout=20)["pass@1"] == 0.0


# ---------------------------------------------------------------------------------------------- hostile programs
# Each reproduces an escape seen against an earlier sandbox; sizes are modest, each case is bounded in time.

SANDBOX_UID_PROGRAM = """
import os
print('uid', os.getuid(), os.geteuid())
for path in ('/etc/shadow', '/etc/gshadow'):
    try:
        open(path).read(); print('read', path)
    except OSError:
        print('denied', path)
try:
    print('root', sorted(os.listdir('/root')))
except OSError:
    print('root', [])
"""


def test_program_runs_unprivileged_and_sees_no_host_secrets(sandbox):
    result = sandbox.run(SANDBOX_UID_PROGRAM)
    lines = result.stdout.splitlines()
    assert result.status == "ok", result.stderr
    uid, euid = (int(x) for x in lines[0].split()[1:])
    assert uid != 0 and euid != 0
    assert "read /etc/shadow" not in lines and "read /etc/gshadow" not in lines
    # of the host's /root, at most the folders that lead to the Python installation are there
    on_the_way = {p.split("/")[2] for p in {sys.prefix, sys.base_prefix} if p.startswith("/root/")}
    inside = eval(lines[-1][len("root "):])
    assert set(inside) <= on_the_way


def test_no_secret_of_the_evaluator_reaches_the_program(sandbox, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_4711")
    program = ("import os, glob\nprint(dict(os.environ))\nfor path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
               "    try:\n        print(path, open(path, 'rb').read())\n    except OSError as err:\n        print(path, err)\n")
    result = sandbox.run(program)
    assert result.status == "ok" and "/proc/1/environ" in result.stdout  # it did look
    assert "hf_secret_token_4711" not in result.stdout + result.stderr


def test_output_flood_is_capped_and_said(sandbox):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    program = "import sys\nchunk = 'x' * 2**20\nfor _ in range(200):\n    sys.stdout.write(chunk)\nsys.stderr.write('done')\n"
    result = sandbox.run(program, timeout=20)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.status == "ok" and result.stderr == "done"
    assert len(result.stdout) <= 2**20 + 200 and getattr(result, "stdout_truncated", False)
    assert "truncated" in getattr(result, "notes", "")
    assert grown_mb < 100  # 200 MB went through, the evaluator kept at most the cap


def test_scratch_is_a_small_tmpfs_not_the_host_disk(sandbox):
    program = ("import os\nmb = files = 0\ntry:\n    for i in range(100):\n        open(f'big{i}', 'wb').write(b'x' * 2**20); mb += 1\n"
               "except OSError:\n    pass\nfor i in range(20000):\n    try:\n        open(f'f{i}', 'w').close(); files += 1\n"
               "    except OSError:\n        break\nfs = [l.split() for l in open('/proc/self/mountinfo') if l.split()[4] == os.getcwd()]\n"
               "print(mb, files, fs[-1][fs[-1].index('-') + 1] if fs else 'none')\n")
    result = sandbox.run(program, timeout=20)
    mb, files, fstype = result.stdout.split()
    assert fstype == "tmpfs"  # the scratch folder is memory, bounded, gone after the run
    assert int(mb) <= 64 and int(files) <= 4096  # default scratch: 64 MiB, 4096 inodes


def test_memory_limit_holds_for_the_whole_process_tree():
    small = Sandbox(timeout=10, memory_mb=256, max_processes=32)
    program = ("import os, sys, time\nfor _ in range(3):\n    if os.fork() == 0:\n        block = bytearray(b'\\x01') * (150 * 2**20)\n"
               "        print('held', flush=True); time.sleep(3); os._exit(0)\nfor _ in range(3):\n    try:\n        os.wait()\n"
               "    except ChildProcessError:\n        break\n")
    result = small.run(program)
    assert result.stdout.count("held") <= 1  # two children of 150 MB would already exceed the 256 MB limit of the tree


def test_ptrace_is_refused(sandbox):
    program = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nfor pid in (1, os.getppid()):\n"
               "    print(pid, libc.ptrace(16, pid, 0, 0), ctypes.get_errno())\n")  # PTRACE_ATTACH
    result = sandbox.run(program)
    assert result.status == "ok" and len(result.stdout.splitlines()) == 2
    assert all(line.split()[1] == "-1" for line in result.stdout.splitlines())


def test_no_new_namespaces_inside(sandbox):
    program = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "for flags in (0x10000000, 0x10000000 | 0x00020000, 0x00020000, 0x40000000):\n"  # user, user+mount, mount, net
               "    print(hex(flags), libc.unshare(flags))\n")
    result = sandbox.run(program)
    assert result.status == "ok" and len(result.stdout.splitlines()) == 4
    assert all(line.split()[1] == "-1" for line in result.stdout.splitlines())


@pytest.mark.parametrize("how", ["--copies", "--symlinks"])
def test_interpreter_under_a_temp_dir_runs(tmp_path, how):
    venv = tmp_path / "venv"  # below /tmp, where the sandbox's own /tmp once hid it
    subprocess.run([sys.executable, "-m", "venv", how, "--without-pip", str(venv)], check=True)
    in_venv = Sandbox(timeout=10, python=str(venv / "bin" / "python"))
    result = in_venv.run("import sys\nprint(sys.prefix)")
    assert result.status == "ok" and result.stdout.strip() == str(venv)


def test_a_sandbox_that_cannot_start_is_an_error_not_a_failed_test(tmp_path):
    missing = str(tmp_path / "no-python")
    with pytest.raises(RuntimeError, match="sandbox"):
        Sandbox(timeout=5, python=missing)
    problems = [{"prompt": "def f():\n", "test": "def check(fn):\n    assert fn() == 1\n", "entry_point": "f"}]
    with pytest.raises(RuntimeError, match="sandbox"):  # never pass@1 = 0.0
        pass_at_k(problems, [["    return 1\n"]], timeout=5, python=missing)


def test_without_cgroups_it_refuses_unless_weaker_is_allowed(tmp_path):
    """A machine without usable cgroups (an empty /sys/fs/cgroup in a private mount namespace): no silent downgrade."""
    if os.geteuid() != 0:
        pytest.skip("hiding the cgroup file system needs root")
    script = tmp_path / "no_cgroups.py"
    script.write_text(
        "from llm_recipes.errors import ConfigError\nfrom llm_recipes.evaluation.sandbox import Sandbox\n"
        "try:\n    Sandbox(timeout=5)\n    print('ran without cgroups')\nexcept ConfigError as err:\n    print('refused:', err)\n"
        "weaker = Sandbox(timeout=5, allow_weaker_sandbox=True)\n"
        "print('weaker:', weaker.run('print(6 * 7)').stdout.strip(), sorted(k for k, held in weaker.limits.items() if not held))\n")
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                          f"mount -t tmpfs none /sys/fs/cgroup && exec {sys.executable} {script}"],
                         capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert lines and lines[0].startswith("refused:") and "allow_weaker_sandbox" in lines[0] and "memory" in lines[0], out.stderr
    assert lines[1] == "weaker: 42 ['memory_tree', 'process_count']", out.stderr


def test_every_limit_holds_on_this_machine(sandbox):
    if os.geteuid() != 0:
        pytest.skip("the full sandbox (tmpfs scratch with an inode limit, cgroups) needs root here")
    assert getattr(sandbox, "limits", None) and all(sandbox.limits.values()), getattr(sandbox, "limits", None)


def test_an_orphan_does_not_outlive_its_run(sandbox):
    marker = f"orphan-{os.getpid()}-{time.time_ns()}"
    program = (f"import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}])\n"
               f"    os._exit(0)\nos.wait()\n")
    sandbox.run(program)
    time.sleep(0.5)
    alive = []
    for cmdline in __import__("glob").glob("/proc/[0-9]*/cmdline"):
        try:
            if marker.encode() in open(cmdline, "rb").read():
                alive.append(cmdline)
        except OSError:
            pass
    assert alive == []


def test_humaneval_file_shape_gives_the_planted_pass_at_1(tmp_path):
    """HumanEval rows in the wheel's shape (.jsonl.gz): right and planted-wrong completions -> the fraction counted here."""
    import gzip
    import json

    rows = read_problems(humaneval_path())[:12]
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    problems = read_problems(path)
    assert [p["task_id"] for p in problems] == [r["task_id"] for r in rows]
    wrong = "    raise NotImplementedError('planted')\n"
    completions = [[p["canonical_solution"], wrong] if i % 3 == 0 else [p["canonical_solution"]] if i % 3 == 1 else [wrong]
                   for i, p in enumerate(problems)]
    expected = sum(c.count(p["canonical_solution"]) / len(c) for p, c in zip(problems, completions)) / len(problems)
    assert expected == 0.5
    scores = pass_at_k(problems, completions, k=(1,), timeout=20, num_workers=2)
    assert scores["pass@1"] == pytest.approx(expected)
    assert scores["results"][2][0]["status"] == "error" and "planted" in scores["results"][2][0]["stderr"]


def test_as_a_normal_user_it_refuses_unless_weaker_is_allowed():
    """Not root (here: the evaluator itself runs as nobody): no tmpfs scratch with an inode limit, no cgroups."""
    system_python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.access(system_python, os.X_OK):
        pytest.skip("needs root to become nobody, and a system Python that nobody can run")
    folder = Path(tempfile.mkdtemp())  # pytest's tmp_path lies below a folder only root may enter
    script = folder / "as_nobody.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parents[1] / 'src')!r})\n"
        "from llm_recipes.errors import ConfigError\nfrom llm_recipes.evaluation.sandbox import Sandbox\n"
        "try:\n    Sandbox(timeout=5, python=sys.executable)\n    print('ran')\nexcept ConfigError as err:\n    print('refused:', err)\n"
        "weaker = Sandbox(timeout=5, python=sys.executable, allow_weaker_sandbox=True)\n"
        "print('weaker:', weaker.run('import os; print(os.getuid())').stdout.strip(), sorted(k for k, v in weaker.limits.items() if not v))\n")
    folder.chmod(0o755)
    script.chmod(0o644)
    try:
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i", "PATH=/usr/bin:/bin",
                              system_python, str(script)], capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        script.unlink()
        folder.rmdir()
    lines = out.stdout.splitlines()
    assert lines and lines[0].startswith("refused:") and "allow_weaker_sandbox" in lines[0], out.stderr
    assert lines[1] == "weaker: 65534 ['memory_tree', 'process_count', 'scratch_limits']", out.stderr
