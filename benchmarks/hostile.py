"""Hostile programs against the code sandbox: each tries one escape or exhaustion, and a check on the host side says
whether it was contained.

    OMP_NUM_THREADS=1 python benchmarks/hostile.py [--out benchmarks/results/hostile.json]

Prints, for each program, what it tried, whether it was contained and the evidence, then the totals and the
limits the sandbox reports as held; writes the JSON and a Markdown table next to it. Sizes are modest (a 200 MB
flood proves the output cap as well as 1.5 GB would) and every case is bounded in time.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from llm_recipes.evaluation.sandbox import Sandbox, SandboxResult

SECRET = "hf_planted_secret_9f3a1c"
MEMORY_MB, MAX_PROCESSES, TIMEOUT = 256, 32, 10
SCRATCH_MB, SCRATCH_INODES, OUTPUT_CAP = 64, 4096, 2**20


def lines(result: SandboxResult) -> list[str]:
    return result.stdout.splitlines()


def all_minus_one(result: SandboxResult, count: int) -> tuple[bool, str]:
    """For programs that print '<what> <return value>' per attempt: every attempt returned -1."""
    got = [line.rsplit(" ", 1) for line in lines(result)]
    ok = len(got) == count and all(value == "-1" for _, value in got)
    return ok, "; ".join(" ".join(x) for x in got) or f"{result.status}: {result.stderr[-200:]}"


CTYPES = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def cases(host_tmp: Path) -> list[dict]:
    """Each case: name, what it tries, the program, and check(result, seconds, rss_growth_mb) -> (contained, evidence)."""
    host_file = host_tmp / "owned_by_sandbox.txt"
    marker = f"orphan-{os.getpid()}-{time.time_ns()}"
    python_dir = os.path.dirname(os.__file__)
    return [
        dict(name="stdout_flood", tries="write 200 MB to stdout (the evaluator keeps what it reads)",
             program="import sys\nchunk = 'x' * 2**20\nfor _ in range(200):\n    sys.stdout.write(chunk)\n",
             check=lambda r, s, rss: (r.stdout_truncated and len(r.stdout) <= OUTPUT_CAP and rss < 100,
                                      f"kept {len(r.stdout)} bytes, said '{r.notes}', evaluator peak RSS +{rss:.0f} MB")),
        dict(name="stderr_flood", tries="write 100 MB to stderr",
             program="import sys\nchunk = 'e' * 2**20\nfor _ in range(100):\n    sys.stderr.write(chunk)\n",
             check=lambda r, s, rss: (r.stderr_truncated and len(r.stderr) <= OUTPUT_CAP and rss < 100,
                                      f"kept {len(r.stderr)} bytes, said '{r.notes}', evaluator peak RSS +{rss:.0f} MB")),
        dict(name="read_shadow", tries="read /etc/shadow and /etc/gshadow",
             program="for p in ('/etc/shadow', '/etc/gshadow'):\n    try:\n        print(p, len(open(p).read()), 'READ')\n"
                     "    except OSError as e:\n        print(p, type(e).__name__)\n",
             check=lambda r, s, rss: ("READ" not in r.stdout and len(lines(r)) == 2, "; ".join(lines(r)))),
        dict(name="read_host_home", tries="list /root, read ~/.bashrc and the Hugging Face token file",
             program="import os\ntry:\n    print('ls', sorted(os.listdir('/root')))\nexcept OSError as e:\n    print('ls', e)\n"
                     "for p in ('/root/.bashrc', '/root/.cache/huggingface/token', '/root/.ssh/id_rsa'):\n"
                     "    try:\n        open(p).read(); print(p, 'READ')\n    except OSError as e:\n        print(p, type(e).__name__)\n",
             check=lambda r, s, rss: ("READ" not in r.stdout and all(x in (".pyenv", "") for x in
                                      _listing(lines(r)[0])), "; ".join(lines(r)))),
        dict(name="environment_secret", tries="find the evaluator's HF_TOKEN in os.environ and every /proc/*/environ",
             program="import glob, os\nprint(dict(os.environ))\nfor p in glob.glob('/proc/*/environ'):\n"
                     "    try:\n        print(p, open(p, 'rb').read())\n    except OSError as e:\n        print(p, e)\n",
             check=lambda r, s, rss: (SECRET not in r.stdout + r.stderr and "/proc/1/environ" in r.stdout,
                                      f"looked at {r.stdout.count('/environ')} environ files; secret absent: "
                                      f"{SECRET not in r.stdout + r.stderr}")),
        dict(name="become_root", tries="report its uid, setuid(0), run setuid-root su and mount",
             program="import os, subprocess\nprint('uid', os.getuid(), os.geteuid())\ntry:\n    os.setuid(0); print('setuid ROOT')\n"
                     "except OSError as e:\n    print('setuid', e.errno)\nfor cmd in (['su', '-c', 'id'], ['mount', '-t', 'tmpfs', 'x', '/scratch']):\n"
                     "    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)\n"
                     "    print(cmd[0], p.returncode)\n",
             check=lambda r, s, rss: (lines(r)[:1] != [] and lines(r)[0].split()[1:] != ["0", "0"] and "ROOT" not in r.stdout
                                      and all(x.split()[1] != "0" for x in lines(r)[2:4]) and len(lines(r)) == 4,
                                      "; ".join(lines(r)))),
        dict(name="write_host", tries="write into /usr, /etc, the Python installation and a host temp folder",
             program=f"for p in ['/usr/owned', '/etc/owned', {python_dir + '/owned.py'!r}, {str(host_file)!r}]:\n"
                     f"    try:\n        open(p, 'w').write('x'); print(p, 'WROTE')\n    except OSError as e:\n        print(p, type(e).__name__)\n",
             check=lambda r, s, rss: ("WROTE" not in r.stdout and not host_file.exists()
                                      and not os.path.exists(python_dir + "/owned.py"), "; ".join(lines(r)))),
        dict(name="write_dev", tries="create files under /dev and / (tmpfs of bwrap, unlimited if writable)",
             program="for p in ('/dev/owned', '/owned', '/proc/owned'):\n    try:\n        open(p, 'w').write('x' * 2**20); print(p, 'WROTE')\n"
                     "    except OSError as e:\n        print(p, type(e).__name__)\n",
             check=lambda r, s, rss: ("WROTE" not in r.stdout and len(lines(r)) == 3, "; ".join(lines(r)))),
        dict(name="scratch_disk_fill", tries="write 200 MB through the scratch folder",
             program="import os\nmb = 0\ntry:\n    for i in range(200):\n        open(f'big{i}', 'wb').write(b'x' * 2**20); mb += 1\n"
                     "except OSError as e:\n    pass\nfs = [l.split(' - ')[1].split()[0] for l in open('/proc/self/mountinfo') if l.split()[4] == os.getcwd()]\n"
                     "print(mb, fs[-1])\n",
             check=lambda r, s, rss: (len(lines(r)) == 1 and int(lines(r)[0].split()[0]) <= SCRATCH_MB and lines(r)[0].endswith("tmpfs"),
                                      f"wrote {lines(r)[0].split()[0] if lines(r) else '?'} MiB into a "
                                      f"{lines(r)[0].split()[-1] if lines(r) else '?'} scratch (cap {SCRATCH_MB} MiB)")),
        dict(name="inode_flood", tries="create 20,000 empty files in scratch",
             program="n = 0\nfor i in range(20000):\n    try:\n        open(f'f{i}', 'w').close(); n += 1\n    except OSError:\n        break\nprint(n)\n",
             check=lambda r, s, rss: (lines(r) != [] and int(lines(r)[0]) <= SCRATCH_INODES,
                                      f"created {lines(r)[0] if lines(r) else '?'} files (cap {SCRATCH_INODES} inodes)")),
        dict(name="big_single_file", tries="write one 48 MB file (file size limit 16 MB)",
             program="import os\nfd = os.open('big', os.O_WRONLY | os.O_CREAT)\nn = 0\ntry:\n    for _ in range(48):\n"
                     "        os.write(fd, b'x' * 2**20); n += 1\nexcept OSError as e:\n    print('stopped', e.errno)\nprint(n)\n",
             check=lambda r, s, rss: ((lines(r)[-1:] or ["99"])[0].isdigit() and int((lines(r)[-1:] or ["99"])[0]) <= 16 or r.status == "killed",
                                      f"{r.status}; wrote {(lines(r)[-1:] or ['?'])[0]} MiB")),
        dict(name="memory_tree", tries=f"4 children of 150 MB each under a {MEMORY_MB} MB limit",
             program="import os, time\nfor _ in range(4):\n    if os.fork() == 0:\n        b = bytearray(b'\\x01') * (150 * 2**20)\n"
                     "        print('held', flush=True); time.sleep(3); os._exit(0)\nfor _ in range(4):\n    try:\n        os.wait()\n"
                     "    except ChildProcessError:\n        break\n",
             check=lambda r, s, rss: (r.stdout.count("held") * 150 <= MEMORY_MB,
                                      f"{r.stdout.count('held')} of 4 children held 150 MB; {r.notes or r.status}")),
        dict(name="memory_hog", tries="one process grows to 2 GB",
             program="chunks = []\nfor _ in range(32):\n    chunks.append(bytearray(b'\\x01') * (64 * 2**20))\nprint('GOT 2GB')\n",
             check=lambda r, s, rss: ("GOT" not in r.stdout and not r.passed and s < 10,
                                      f"{r.status} after {s:.1f} s: {(r.stderr.strip().splitlines() or [''])[-1][:80]}")),
        dict(name="fork_bomb", tries="fork without end",
             program="import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
             timeout=3, check=lambda r, s, rss: (not r.passed and s < 10, f"{r.status} after {s:.1f} s; {r.notes}")),
        dict(name="process_count", tries="start 200 sleeping children",
             program="import os, time\nn = 0\nfor _ in range(200):\n    try:\n        if os.fork() == 0:\n            time.sleep(5); os._exit(0)\n"
                     "        n += 1\n    except OSError:\n        break\nprint(n, flush=True)\nos._exit(0)\n",
             check=lambda r, s, rss: (lines(r) != [] and int(lines(r)[0]) < MAX_PROCESSES,
                                      f"started {lines(r)[0] if lines(r) else '?'} (limit {MAX_PROCESSES} processes)")),
        dict(name="infinite_loop", tries="loop forever", program="while True:\n    pass\n", timeout=2,
             check=lambda r, s, rss: (r.status == "timeout" and s < 5, f"{r.status} after {s:.1f} s")),
        dict(name="busy_threads", tries="8 threads spinning, SIGTERM ignored", timeout=2,
             program="import signal, threading\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                     "for _ in range(8):\n    threading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\n",
             check=lambda r, s, rss: (r.status in ("timeout", "killed") and s < 5, f"{r.status} after {s:.1f} s")),
        dict(name="ptrace_init", tries="PTRACE_ATTACH to the sandbox's init (pid 1) and its parent",
             program=CTYPES + "for pid in (1, os.getppid()):\n    print('attach', pid, libc.ptrace(16, pid, 0, 0))\n",
             check=lambda r, s, rss: all_minus_one(r, 2)),
        dict(name="read_init_memory", tries="process_vm_readv and /proc/1/mem of init",
             program=CTYPES + "buf = ctypes.create_string_buffer(64)\n"
                     "class IOV(ctypes.Structure):\n    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
                     "local, remote = IOV(ctypes.addressof(buf), 64), IOV(0x400000, 64)\n"
                     "print('process_vm_readv', libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))\n"
                     "try:\n    open('/proc/1/mem', 'rb').read(1); print('mem 0')\nexcept OSError:\n    print('mem -1')\n",
             check=lambda r, s, rss: all_minus_one(r, 2)),
        dict(name="nested_user_namespace", tries="unshare a new user namespace, user+mount, mount, network",
             program=CTYPES + "for name, flags in (('user', 0x10000000), ('user+mount', 0x10020000), ('mount', 0x20000), ('net', 0x40000000)):\n"
                     "    print(name, libc.unshare(flags))\n",
             check=lambda r, s, rss: all_minus_one(r, 4)),
        dict(name="clone_new_namespaces", tries="clone() and clone3() with CLONE_NEWUSER",
             program=CTYPES + "libc.syscall.restype = ctypes.c_long\n"
                     "print('clone', libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))\n"  # fails before a child exists
                     "args = (ctypes.c_uint64 * 11)(0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)\n"
                     "pid = libc.syscall(435, ctypes.byref(args), 88)\nif pid == 0:\n    os._exit(0)\nprint('clone3', pid if pid < 0 else 0)\n",
             check=lambda r, s, rss: all_minus_one(r, 2)),
        dict(name="mount_tmpfs", tries="mount a tmpfs and remount / read-write",
             program=CTYPES + "print('mount', libc.mount(b'none', b'/scratch', b'tmpfs', 0, None))\n"
                     "print('remount', libc.mount(None, b'/', None, 32 | 4096, None))\n",  # MS_REMOUNT | MS_BIND
             check=lambda r, s, rss: all_minus_one(r, 2)),
        dict(name="kernel_keyring", tries="read the session keyring and add a key",
             program=CTYPES + "libc.syscall.restype = ctypes.c_long\n"
                     "print('keyctl', libc.syscall(250, 0, -3, 0, 0, 0))\n"  # KEYCTL_GET_KEYRING_ID of the session keyring
                     "print('add_key', libc.syscall(248, b'user', b'x', b'y', 1, -3))\n",
             check=lambda r, s, rss: all_minus_one(r, 2)),
        dict(name="sethostname", tries="rename the host", program=CTYPES + "print('sethostname', libc.sethostname(b'owned', 5))\n",
             check=lambda r, s, rss: all_minus_one(r, 1)),
        dict(name="network", tries="connect to a listening socket of the host (127.0.0.1) and to 1.1.1.1:53",
             program="import socket, sys\nfor host, port in (('127.0.0.1', int(sys.argv_port)), ('1.1.1.1', 53)):\n"
                     "    try:\n        socket.create_connection((host, port), timeout=2); print(host, 'CONNECTED')\n"
                     "    except OSError as e:\n        print(host, type(e).__name__)\n",
             check=None),  # filled in by main (needs the host's listening socket)
        dict(name="kill_evaluator", tries="SIGKILL its parent, the evaluator's pid and every process it can see",
             program=f"import os, signal\nfor pid in (os.getppid(), {os.getpid()}, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
                     f"    except OSError:\n        pass\n",
             check=lambda r, s, rss: (True, f"{r.status}; the evaluator is alive (this line is printed by it)")),
        dict(name="orphan_daemon", tries="double-fork a session leader that sleeps 30 s past the run",
             program=f"import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                     f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}])\n"
                     f"    os._exit(0)\nos.wait()\n",
             check=lambda r, s, rss: _no_process_with(marker)),
    ]


def _listing(line: str) -> list[str]:
    try:
        return json.loads(line.split(" ", 1)[1].replace("'", '"'))
    except (IndexError, ValueError):
        return [""]


def _no_process_with(marker: str) -> tuple[bool, str]:
    time.sleep(0.5)
    alive = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if marker.encode() in Path(cmdline).read_bytes():
                alive.append(cmdline.split("/")[2])
        except OSError:
            pass
    return not alive, f"processes left on the host: {alive or 'none'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/hostile.json")
    args = parser.parse_args()
    os.environ["HF_TOKEN"] = SECRET  # planted in the evaluator: no program may find it
    sandbox = Sandbox(timeout=TIMEOUT, memory_mb=MEMORY_MB, max_processes=MAX_PROCESSES, scratch_mb=SCRATCH_MB,
                      scratch_inodes=SCRATCH_INODES, max_output_bytes=OUTPUT_CAP)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile_") as host_tmp:
        for case in cases(Path(host_tmp)):
            program = case["program"].replace("int(sys.argv_port)", str(server.getsockname()[1]))
            if case["check"] is None:
                case["check"] = lambda r, s, rss: ("CONNECTED" not in r.stdout and len(lines(r)) == 2 and not accepted,
                                                   "; ".join(lines(r)) + f"; host socket accepted {len(accepted)}")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            start = time.monotonic()
            result = sandbox.run(program, timeout=case.get("timeout"))
            seconds = time.monotonic() - start
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
            try:
                contained, evidence = case["check"](result, seconds, rss)
            except (ValueError, IndexError) as err:  # output not as expected: counted as not contained
                contained, evidence = False, f"unexpected output ({err}): {result.stdout[:200]!r} {result.stderr[-200:]!r}"
            rows.append({"name": case["name"], "tried": case["tries"], "contained": bool(contained),
                         "evidence": evidence, "status": result.status, "seconds": round(seconds, 2)})
            print(f"{'CONTAINED' if contained else 'ESCAPED  '}  {case['name']:<22} {case['tries']}\n"
                  f"           {result.status}, {seconds:.1f} s: {evidence}", flush=True)
    stop.set()
    server.close()
    contained = sum(r["contained"] for r in rows)
    print(f"\n{contained} of {len(rows)} hostile programs contained")
    print("limits held:", ", ".join(k for k, v in sandbox.limits.items() if v) or "none")
    print("limits not held:", ", ".join(k for k, v in sandbox.limits.items() if not v) or "none")
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}, uid {os.geteuid()}",
              "python": sys.version.split()[0],
              "settings": {"timeout_s": TIMEOUT, "memory_mb": MEMORY_MB, "max_processes": MAX_PROCESSES,
                           "scratch_mb": SCRATCH_MB, "scratch_inodes": SCRATCH_INODES, "max_output_bytes": OUTPUT_CAP},
              "limits": sandbox.limits, "contained": contained, "total": len(rows), "cases": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    table = ["| program | tried | contained | evidence |", "|---|---|---|---|"]
    table += [f"| {r['name']} | {r['tried']} | {'yes' if r['contained'] else '**NO**'} | {r['evidence'].replace('|', '/')} |"
              for r in rows]
    out.with_suffix(".md").write_text(
        f"# Hostile programs through the code sandbox (benchmarks/hostile.py)\n\n{record['date']}; {record['machine']}; "
        f"Python {record['python']}; limits: {json.dumps(record['settings'])}.\n\n"
        f"**{contained} of {len(rows)} contained.** Limits held: "
        f"{', '.join(k for k, v in sandbox.limits.items() if v)}; not held: "
        f"{', '.join(k for k, v in sandbox.limits.items() if not v) or 'none'}.\n\n" + "\n".join(table) + "\n")
    if contained < len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
