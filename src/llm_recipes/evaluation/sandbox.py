"""Run untrusted (model-generated) Python inside a sandbox built from OS tools: bubblewrap (Debian `bubblewrap`) for
the namespaces and the file system view, cgroups for the limits of the whole process tree, a seccomp filter
(libseccomp) against ptrace and new namespaces, and util-linux (`unshare`, `mount`, `prlimit`, `setpriv`).

    sandbox = Sandbox(timeout=5, memory_mb=512, max_processes=32)
    result = sandbox.run("print(1 + 1)")        # -> SandboxResult(status="ok", returncode=0, stdout="2\\n", ...)
    sandbox.limits                             # -> {"memory_tree": True, "no_ptrace": True, ...}: what holds here

What the program gets (each item is a key of `Sandbox.limits`, checked by a probe program when the sandbox is made):

- network_off: its own network namespace, loopback only.
- read_only_system: `/usr`, `/etc` and the interpreter's installation read-only; nothing else of the host's files.
- clean_environment: `PATH`, `HOME`, `TMPDIR` only, in the program and in every process it can see.
- unprivileged_uid: it runs as uid 65534 (nobody) on the host, in a user namespace, with no capabilities.
- no_host_secrets: `/etc/shadow`, `/etc/gshadow`, `/etc/ssh`, `/etc/ssl/private` are hidden; `/root` and homes
  are not mounted (only the folders that lead to the interpreter).
- scratch_limits: its working folder `/scratch` (also `TMPDIR`) is a tmpfs of `scratch_mb` MiB and
  `scratch_inodes` files: nothing reaches the host disk.
- memory_tree: one memory limit (`memory_mb`) for the whole process tree: a cgroup (v2 `memory.max` or v1
  `memory.limit_in_bytes`); scratch files count towards it. Each process also has RLIMIT_AS = `memory_mb`.
- process_count: cgroup `pids.max` = `max_processes`.
- no_ptrace, no_nested_namespaces: a seccomp filter refuses ptrace, process_vm_*, unshare, setns, mount, clone
  with namespace flags (and bwrap's --disable-userns); its own PID namespace: it cannot see or signal the host.
- output_cap: at most `max_output_bytes` of stdout and of stderr are kept (the rest is read and dropped, and
  the result says so); wall time `timeout` and CPU time are limited; RLIMIT_FSIZE = `max_file_mb`.

A limit that cannot be enforced here (no writable cgroup, not root) makes the constructor refuse with a
ConfigError unless `allow_weaker_sandbox=True`; then `limits` says what held. A sandbox that cannot start the
interpreter (missing, hidden, bwrap setup error) raises SandboxError, at construction (a probe run) or in `run`:
it is never a failed test. Without bwrap, `allow_unsandboxed=True` runs the program with rlimits only (unsafe).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from llm_recipes.errors import ConfigError

logger = logging.getLogger(__name__)

BWRAP_MISSING = (
    "sandbox: bubblewrap (bwrap) is not installed, so generated code cannot be run safely; install it "
    "(`apt-get install bubblewrap`) or set allow_unsandboxed_code: true to run it without a sandbox (unsafe)"
)
SANDBOX_UID = 65534  # nobody: owns nothing on the host
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
HIDDEN_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
HIDDEN_DIRS = ("/etc/ssh", "/etc/ssl/private")
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/scratch", "TMPDIR": "/scratch"}
LIMITS = ("network_off", "read_only_system", "clean_environment", "unprivileged_uid", "no_host_secrets",
          "scratch_limits", "memory_tree", "process_count", "no_ptrace", "no_nested_namespaces", "output_cap")


class SandboxError(RuntimeError):
    """The sandbox itself failed (interpreter missing, bwrap or cgroup setup error): the run must stop."""


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | killed
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    notes: str = ""  # why it was stopped (memory or process limit) and what output was dropped

    @property
    def passed(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------------- seccomp
_BLOCKED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns", "mount", "umount2",
                     "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
                     "mount_setattr", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
                     "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                     "open_by_handle_at", "name_to_handle_at", "io_uring_setup", "acct", "swapon", "swapoff",
                     "reboot", "settimeofday", "clock_settime", "syslog", "quotactl")
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def seccomp_filter() -> bytes | None:
    """The BPF program bwrap loads with --seccomp, built by libseccomp (through ctypes: its Python binding is not
    on PyPI); None where libseccomp is missing. Denies ptrace and everything that makes or enters namespaces or
    mounts; clone3 gets ENOSYS (its flags cannot be inspected) so the C library falls back to clone."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    allow, eperm, enosys, masked_eq = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38, 7
    ctx = lib.seccomp_init(allow)
    if not ctx:
        return None
    try:
        def deny(syscall: str, action: int, cmp: _ArgCmp | None = None) -> None:
            number = lib.seccomp_syscall_resolve_name(syscall.encode())
            if number < 0:  # not a syscall of this architecture
                return
            if lib.seccomp_rule_add_array(ctx, action, number, 1 if cmp else 0, ctypes.byref(cmp) if cmp else None) < 0:
                raise SandboxError(f"sandbox: libseccomp refused the rule for {syscall}")

        for syscall in _BLOCKED_SYSCALLS:
            deny(syscall, eperm)
        for flag in _NAMESPACE_FLAGS:  # clone(CLONE_NEW*): one rule per flag (libseccomp compares masked values)
            deny("clone", eperm, _ArgCmp(0, masked_eq, flag, flag))
        deny("clone3", enosys)
        fd = os.memfd_create("seccomp")
        try:
            if lib.seccomp_export_bpf(ctx, fd) < 0:
                return None
            os.lseek(fd, 0, os.SEEK_SET)
            return os.read(fd, 1 << 20)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


# ---------------------------------------------------------------------------------------------- cgroups
def _mounts() -> list[tuple[str, str, str, list[str]]]:
    """(root, mount point, file system type, super options) of every mount, from /proc/self/mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3:
            out.append((fields[3], fields[4].replace("\\040", " "), tail[0], tail[2].split(",")))
    return out


def _own_cgroups() -> dict[str, str]:
    """Controller ('' for cgroup v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = path
    return out


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def _folder(mountpoint: str, root: str, path: str) -> Path:
    """The folder of cgroup `path` in a hierarchy mounted at `mountpoint` whose mount shows cgroup `root`."""
    relative = os.path.relpath(path, root)
    return Path(mountpoint) if relative.startswith("..") else Path(mountpoint, relative)


def cgroup_parents() -> dict[str, Path]:
    """Where a per-run child cgroup can be made: {'memory': folder, 'pids': folder} (the same folder on cgroup v2),
    each the cgroup this process is in, or the hierarchy's root; a controller without such a folder is missing."""
    own = _own_cgroups()
    found: dict[str, Path] = {}
    for root, mountpoint, fstype, options in _mounts():
        if fstype == "cgroup2":
            path = own.get("", "/")
            candidates = [_folder(mountpoint, root, path), Path(mountpoint)]
            for folder in candidates:
                enabled = (folder / "cgroup.subtree_control")
                if not _writable(folder) or not enabled.exists():
                    continue
                wanted = [c for c in ("memory", "pids") if c not in found]
                try:  # children get a controller only where the parent's subtree_control enables it
                    available = (folder / "cgroup.controllers").read_text().split()
                    missing = [c for c in wanted if c in available and c not in enabled.read_text().split()]
                    if missing:
                        enabled.write_text(" ".join("+" + c for c in missing))
                    active = enabled.read_text().split()
                except OSError:  # EBUSY: processes live in this cgroup (cgroup v2 forbids controllers there)
                    continue
                for controller in wanted:
                    if controller in active:
                        found[controller] = folder
        elif fstype == "cgroup":
            for controller in ("memory", "pids"):
                if controller in options and controller not in found:
                    path = own.get(controller, "/")
                    for folder in (_folder(mountpoint, root, path), Path(mountpoint)):
                        if _writable(folder) and (folder / "cgroup.procs").exists():
                            found[controller] = folder
                            break
    return found


class _RunCgroups:
    """The child cgroups of one run, with its memory and process limits; killed and removed afterwards."""

    def __init__(self, parents: dict[str, Path], memory_bytes: int, max_processes: int):
        self.folders: dict[str, Path] = {}
        name = f"llm_recipes_sandbox_{uuid.uuid4().hex[:12]}"
        try:
            for controller, parent in parents.items():
                folder = parent / name
                if folder not in self.folders.values():
                    folder.mkdir()
                self.folders[controller] = folder
            if "memory" in self.folders:
                memory = self.folders["memory"]
                if (memory / "memory.max").exists():  # cgroup v2
                    (memory / "memory.max").write_text(str(memory_bytes))
                    if (memory / "memory.swap.max").exists():
                        (memory / "memory.swap.max").write_text("0")
                else:
                    (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    if (memory / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit
                        (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            if "pids" in self.folders:
                (self.folders["pids"] / "pids.max").write_text(str(max_processes))
        except OSError as err:
            self.remove()
            raise SandboxError(f"sandbox: cannot set up the run's cgroup ({err})") from None

    def procs_files(self) -> list[str]:
        return sorted({str(f / "cgroup.procs") for f in self.folders.values()})

    def events(self) -> str:
        """Which limit stopped something, from the cgroups' event counters."""
        notes = []
        memory = self.folders.get("memory")
        if memory is not None:
            counters = memory / ("memory.events" if (memory / "memory.events").exists() else "memory.oom_control")
            if _counter(counters, "oom_kill") > 0:
                notes.append("memory limit reached: the kernel killed a process of the tree")
        pids = self.folders.get("pids")
        if pids is not None and _counter(pids / "pids.events", "max") > 0:
            notes.append("process limit reached: a fork was refused")
        return "; ".join(notes)

    def remove(self) -> None:
        for folder in set(self.folders.values()):
            for _ in range(100):  # kill what is left (also what escaped the process group), then remove
                try:
                    if (folder / "cgroup.kill").exists():
                        (folder / "cgroup.kill").write_text("1")
                    for pid in (folder / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                logger.warning("sandbox: could not remove cgroup %s", folder)


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------- output
class _CappedReader(threading.Thread):
    """Reads a pipe to its end, keeping the first `cap` bytes (the rest is counted and dropped)."""

    def __init__(self, stream, cap: int):
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.kept = bytearray()
        self.total = 0

    def run(self) -> None:
        while True:
            chunk = self.stream.read1(1 << 16)
            if not chunk:
                break
            self.total += len(chunk)
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)


# ---------------------------------------------------------------------------------------------- sandbox
PROBE = r"""
import ctypes, glob, json, os
def readable(path):
    try:
        open(path, 'rb').read(1); return True
    except OSError:
        return False
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
libc = ctypes.CDLL(None, use_errno=True)
environs = set()
for path in glob.glob('/proc/[0-9]*/environ'):
    try:
        environs.update(k.split(b'=', 1)[0].decode() for k in open(path, 'rb').read().split(b'\0') if k)
    except OSError:
        pass
scratch = [l.split(' - ')[1].split() for l in open('/proc/self/mountinfo') if l.split()[4] == '/scratch']
print(json.dumps({
    'uid': os.getuid(), 'caps': status['CapEff'].strip(), 'seccomp': status.get('Seccomp', '0').strip(),
    'interfaces': [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]],
    'secrets_readable': [p for p in ('/etc/shadow', '/etc/gshadow', '/etc/ssh/ssh_host_rsa_key') if readable(p)],
    'root_entries': sorted(os.listdir('/root')) if os.path.isdir('/root') else [],
    'environ_keys': sorted(environs | set(os.environ)),
    'usr_writable': os.access('/usr', os.W_OK),
    'scratch': scratch[-1] if scratch else [],
    'ptrace_init': libc.ptrace(16, 1, 0, 0), 'unshare_user': libc.unshare(0x10000000),
}))
"""


class Sandbox:
    """Runs Python programs under bwrap with limits; one instance may run many programs (also in threads)."""

    def __init__(self, timeout: float = 10.0, memory_mb: int = 1024, max_processes: int = 64,
                 max_file_mb: int = 16, scratch_mb: int = 64, scratch_inodes: int = 4096,
                 max_output_bytes: int = 2**20, allow_unsandboxed: bool = False,
                 allow_weaker_sandbox: bool = False, python: str | None = None):
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_file_mb = max_file_mb
        self.scratch_mb = scratch_mb
        self.scratch_inodes = scratch_inodes
        self.max_output_bytes = max_output_bytes
        self.python = os.path.abspath(python or sys.executable)
        if not os.access(self.python, os.X_OK):
            raise SandboxError(f"sandbox: the interpreter {self.python} does not exist or cannot be executed")
        self.bwrap = shutil.which("bwrap")
        if self.bwrap is None and not allow_unsandboxed:
            raise ConfigError(BWRAP_MISSING)
        if self.bwrap is None:
            logger.warning("sandbox: bwrap missing; running generated code WITHOUT a sandbox (allow_unsandboxed)")
        self.as_root = os.geteuid() == 0
        self.cgroup_parents = cgroup_parents()
        self.seccomp = seccomp_filter() if self.sandboxed else None
        self.prefixes = self._interpreter_prefixes()
        self.limits: dict[str, bool] = {name: False for name in LIMITS}
        self.limits["output_cap"] = True
        self.limits["memory_tree"] = "memory" in self.cgroup_parents
        self.limits["process_count"] = "pids" in self.cgroup_parents
        if self.sandboxed:
            self._probe()
        weak = [name for name, held in self.limits.items() if not held]
        if weak and self.sandboxed and not allow_weaker_sandbox:
            raise ConfigError(
                f"sandbox: cannot enforce {', '.join(weak)} here ({self._why(weak)}); refusing to run generated "
                "code; set allow_weaker_sandbox: true to run it with the limits that hold")
        if weak:
            logger.warning("sandbox: running with weaker limits; not enforced: %s", ", ".join(weak))

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    def _why(self, weak: list[str]) -> str:
        reasons = []
        if {"memory_tree", "process_count"} & set(weak):
            reasons.append("no writable cgroup with the memory and pids controllers")
        if "scratch_limits" in weak and not self.as_root:
            reasons.append("not root: no inode-limited tmpfs scratch")
        if {"no_ptrace", "no_nested_namespaces"} & set(weak) and self.seccomp is None:
            reasons.append("libseccomp missing")
        return "; ".join(reasons) or "see the sandbox probe"

    def _interpreter_prefixes(self) -> list[str]:
        """The folders the interpreter needs (venv, its base installation), asked of the interpreter itself; a
        launcher (pyenv shim) is replaced by the interpreter it starts."""
        try:
            out = subprocess.run([self.python, "-I", "-c", "import sys, json; print(json.dumps([sys.executable, sys.prefix, "
                                  "sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))"],
                                 capture_output=True, text=True, timeout=60, env=dict(ENV), cwd="/")
            executable, *prefixes = json.loads(out.stdout)
        except (OSError, ValueError, subprocess.TimeoutExpired) as err:
            raise SandboxError(f"sandbox: the interpreter {self.python} does not start ({err})") from None
        if executable and os.access(executable, os.X_OK):
            self.python = executable
        prefixes.append(str(Path(self.python).parent.parent))
        keep: list[str] = []
        for path in sorted({os.path.normpath(p) for p in prefixes}, key=len):
            if path in ("/", "") or any(path == k or path.startswith(k + "/") for k in keep):
                continue
            if not any(path == s or path.startswith(s + "/") for s in SYSTEM_DIRS):
                keep.append(path)
        return keep

    def _probe(self) -> None:
        """Runs PROBE in the sandbox: it must start (else SandboxError) and shows which limits hold."""
        result = self.run(PROBE, timeout=max(self.timeout, 30))
        try:
            seen = json.loads(result.stdout)
        except ValueError:
            raise SandboxError(f"sandbox: the probe program failed ({result.status}): {result.stderr.strip()[-500:]}") from None
        on_the_way = {p.split("/")[2] for p in self.prefixes if p.startswith("/root/")}
        self.limits.update(
            network_off=seen["interfaces"] == ["lo"],
            read_only_system=not seen["usr_writable"],
            clean_environment=set(seen["environ_keys"]) <= set(ENV) | {"PWD", "LC_CTYPE"},  # Python sets LC_CTYPE
            unprivileged_uid=seen["uid"] != 0 and int(seen["caps"], 16) == 0 and (self.as_root or os.geteuid() != 0),
            no_host_secrets=not seen["secrets_readable"] and set(seen["root_entries"]) <= on_the_way,
            scratch_limits=bool(seen["scratch"]) and seen["scratch"][0] == "tmpfs"
            and "nr_inodes" in seen["scratch"][-1] and "size" in seen["scratch"][-1],
            no_ptrace=seen["seccomp"] == "2" and seen["ptrace_init"] == -1,
            no_nested_namespaces=seen["unshare_user"] == -1 and self.seccomp is not None,
        )

    # ------------------------------------------------------------------------------------------ command
    def _bwrap_args(self, stage: Path, program_fd: int, seccomp_fd: int | None) -> list[str]:
        cmd = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
               "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox", "--clearenv"]
        for key, value in ENV.items():
            cmd += ["--setenv", key, value]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                cmd += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                cmd += ["--ro-bind", path, path]
        for path in HIDDEN_FILES:
            if os.path.exists(path):
                cmd += ["--ro-bind", "/dev/null", path]
        for path in HIDDEN_DIRS:
            if os.path.isdir(path):
                cmd += ["--tmpfs", path, "--remount-ro", path]
        for i, prefix in enumerate(self.prefixes):  # as root: bound below the stage, reachable by the sandbox uid
            cmd += ["--ro-bind", str(stage / f"prefix{i}") if self.as_root else prefix, prefix]
        if self.as_root:
            cmd += ["--bind", str(stage / "scratch"), "/scratch"]
        else:  # no inode limit without root (bwrap's tmpfs takes only a size)
            cmd += ["--size", str(self.scratch_mb * 2**20), "--tmpfs", "/scratch"]
        if not any(p == "/tmp" or p.startswith("/tmp/") for p in self.prefixes):
            cmd += ["--symlink", "/scratch", "/tmp"]
        cmd += ["--ro-bind-data", str(program_fd), "/program.py", "--proc", "/proc", "--dev", "/dev",
                "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/scratch"]
        if seccomp_fd is not None:
            cmd += ["--seccomp", str(seccomp_fd)]
        return cmd

    def _command(self, stage: Path, program_fd: int, seccomp_fd: int | None, started_fd: int,
                 cgroups: _RunCgroups | None, timeout: float) -> list[str]:
        """The command line: a root shell in a private mount namespace joins the cgroups, mounts the tmpfs scratch
        and the interpreter where the sandbox uid reaches them, sets rlimits, drops to the sandbox uid, runs bwrap."""
        source = "/program.py" if self.sandboxed else f"/proc/self/fd/{program_fd}"  # bwrap puts the memfd there
        boot = (f"import os;os.write({started_fd},b'+');os.close({started_fd});del os;__file__={source!r};"
                "exec(compile(open(__file__,'rb').read(),__file__,'exec'))")
        python = [self.python, "-I", "-B", "-c", boot]
        rlimits = ["prlimit", f"--as={self.memory_mb * 2**20}", f"--cpu={max(1, int(timeout) + 1)}",
                   f"--fsize={self.max_file_mb * 2**20}", "--core=0", "--"]
        if not self.sandboxed:
            return ["sh", "-c", self._join_cgroups(cgroups) + "exec " + shlex.join(rlimits + python)]
        bwrap = self._bwrap_args(stage, program_fd, seccomp_fd) + ["--"] + python
        if not self.as_root:
            return ["sh", "-c", self._join_cgroups(cgroups) + "exec " + shlex.join(rlimits + bwrap)]
        q = shlex.quote
        mounts = [f"mount -t tmpfs -o size=1m,nr_inodes=64,mode=0755 stage {q(str(stage))}",
                  f"mkdir {q(str(stage / 'scratch'))}",
                  f"mount -t tmpfs -o size={self.scratch_mb}m,nr_inodes={self.scratch_inodes},uid={SANDBOX_UID},"
                  f"gid={SANDBOX_UID},mode=0700 scratch {q(str(stage / 'scratch'))}"]
        for i, prefix in enumerate(self.prefixes):
            mounts += [f"mkdir {q(str(stage / f'prefix{i}'))}", f"mount --bind {q(prefix)} {q(str(stage / f'prefix{i}'))}"]
        drop = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--"]
        script = "set -e\n" + self._join_cgroups(cgroups) + "\n".join(mounts) + "\nexec " + shlex.join(rlimits + drop + bwrap)
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]

    @staticmethod
    def _join_cgroups(cgroups: _RunCgroups | None) -> str:
        if cgroups is None:
            return ""
        return "".join(f"echo $$ > {shlex.quote(f)}\n" for f in cgroups.procs_files())

    # ------------------------------------------------------------------------------------------ run
    def run(self, program: str, timeout: float | None = None) -> SandboxResult:
        """Run `program` (Python source); status 'ok' when it exits 0 within the time limit. Raises SandboxError
        when the interpreter did not start (an infrastructure failure, never the program's fault)."""
        timeout = self.timeout if timeout is None else timeout
        cgroups = _RunCgroups(self.cgroup_parents, self.memory_mb * 2**20, self.max_processes) if self.cgroup_parents else None
        fds: list[int] = []
        proc = None
        try:
            with tempfile.TemporaryDirectory(prefix="llm_recipes_sandbox_") as stage:
                program_fd = os.memfd_create("program")
                fds.append(program_fd)
                os.write(program_fd, program.encode("utf-8"))
                os.lseek(program_fd, 0, os.SEEK_SET)
                seccomp_fd = None
                if self.seccomp is not None:
                    seccomp_fd = os.memfd_create("seccomp")
                    fds.append(seccomp_fd)
                    os.write(seccomp_fd, self.seccomp)
                    os.lseek(seccomp_fd, 0, os.SEEK_SET)
                started_read, started_write = os.pipe()
                fds += [started_read, started_write]
                cmd = self._command(Path(stage), program_fd, seccomp_fd, started_write, cgroups, timeout)
                start = time.monotonic()
                try:
                    proc = subprocess.Popen(cmd, cwd="/" if self.sandboxed else stage, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                            env=dict(ENV) if self.sandboxed else {**ENV, "HOME": stage, "TMPDIR": stage},
                                            pass_fds=[fd for fd in (program_fd, seccomp_fd, started_write) if fd is not None])
                except OSError as err:
                    raise SandboxError(f"sandbox: cannot start {cmd[0]} ({err})") from None
                os.close(started_write)
                fds.remove(started_write)
                readers = [_CappedReader(proc.stdout, self.max_output_bytes), _CappedReader(proc.stderr, self.max_output_bytes)]
                for reader in readers:
                    reader.start()
                try:
                    proc.wait(timeout=timeout)
                    status = "ok" if proc.returncode == 0 else "error"
                except subprocess.TimeoutExpired:
                    status = "timeout"
                seconds = time.monotonic() - start
                self._kill(proc, cgroups)
                for reader in readers:
                    reader.join(timeout=10)
                os.set_blocking(started_read, False)
                try:
                    started = os.read(started_read, 1) == b"+"
                except BlockingIOError:  # nothing written, a writer still open: it did not start either
                    started = False
                out, err = (bytes(r.kept).decode(errors="replace") for r in readers)
                if not started:
                    raise SandboxError(f"sandbox: the interpreter {self.python} did not start in the sandbox "
                                       f"({status}, exit {proc.returncode}): {err.strip()[-500:] or 'no message'}")
                notes = [cgroups.events()] if cgroups is not None else []
                signalled = {-proc.returncode, proc.returncode - 128} & {signal.SIGKILL, signal.SIGXCPU}  # bwrap: 128 + signal
                if status == "error" and signalled:
                    status = "killed"
                    if signal.SIGXCPU in signalled:
                        notes.append("CPU time limit reached")
                for name, reader in zip(("stdout", "stderr"), readers):
                    if reader.truncated:
                        notes.append(f"{name} truncated: kept {len(reader.kept)} of {reader.total} bytes")
                return SandboxResult(status, proc.returncode, out, err, seconds, readers[0].truncated,
                                     readers[1].truncated, "; ".join(n for n in notes if n))
        finally:
            if proc is not None and proc.poll() is None:
                self._kill(proc, cgroups)
            if cgroups is not None:
                cgroups.remove()
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _kill(proc: subprocess.Popen, cgroups: _RunCgroups | None) -> None:
        """Everything of the run dies: bwrap's process group (its sandbox dies with it) and the cgroups."""
        if proc.poll() is None:  # while bwrap lives its process group id is surely this run's
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        if cgroups is not None:
            for folder in set(cgroups.folders.values()):
                try:
                    for pid in (folder / "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass


_SHARED: dict[tuple, Sandbox] = {}


def shared_sandbox(**options) -> Sandbox:
    """The process's Sandbox for these options (Sandbox's keyword arguments), started once: a start (the
    interpreter's folders, a probe run) costs about 0.2 s, and lm-eval scores a code task one problem at a time.
    A start that fails raises every time; PATH's bwrap and the user are part of the key."""
    key = (tuple(sorted(options.items())), shutil.which("bwrap"), os.geteuid())
    if key not in _SHARED:
        _SHARED[key] = Sandbox(**options)
    return _SHARED[key]
