"""Run untrusted (model-generated) Python inside a sandbox: bubblewrap (Debian `bubblewrap`) with no network,
a read-only view of the system, one writable scratch folder, and limits on wall time, CPU time, memory, file size
and process count.

    sandbox = Sandbox(timeout=5, memory_mb=512, max_processes=32)
    result = sandbox.run("print(1 + 1)")        # -> SandboxResult(status="ok", returncode=0, stdout="2\n", ...)

The program sees `/usr`, `/lib*`, `/bin`, `/etc` and the Python installation read-only, a private `/tmp`, its
scratch folder as the working directory, its own PID namespace (it cannot see or signal the evaluator), no
network namespace but loopback, an empty environment, and no capabilities. The process count is held by a cgroup
`pids.max` (RLIMIT_NPROC does not hold inside bwrap as root), where a writable pids cgroup exists.
Running without a sandbox needs an explicit `allow_unsandboxed=True`.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
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
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | killed
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "ok"


def _pids_cgroup_root() -> Path | None:
    """A pids cgroup folder we may create children in (cgroup v1 `pids` hierarchy or cgroup v2), else None."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            if root.name != "pids":  # cgroup v2: pids must be an available controller
                controllers = root / "cgroup.controllers"
                if not controllers.exists() or "pids" not in controllers.read_text().split():
                    continue
            return root
    return None


class Sandbox:
    """Runs Python programs under bwrap with limits; one instance may run many programs (also in threads)."""

    def __init__(self, timeout: float = 10.0, memory_mb: int = 1024, max_processes: int = 64,
                 max_file_mb: int = 16, allow_unsandboxed: bool = False, python: str | None = None):
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_file_mb = max_file_mb
        self.python = python or sys.executable
        self.bwrap = shutil.which("bwrap")
        if self.bwrap is None and not allow_unsandboxed:
            raise ConfigError(BWRAP_MISSING)
        if self.bwrap is None:
            logger.warning("sandbox: bwrap missing; running generated code WITHOUT a sandbox (allow_unsandboxed)")
        self.cgroup_root = _pids_cgroup_root()
        if self.cgroup_root is None:
            logger.warning("sandbox: no writable pids cgroup; the process count is limited by RLIMIT_NPROC only")

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    # ------------------------------------------------------------------------------------------ command
    def _command(self, scratch: Path) -> list[str]:
        python_args = [self.python, "-I", "-B", "program.py"]
        if not self.sandboxed:
            return python_args
        cmd = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
               "--hostname", "sandbox", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
               "--setenv", "HOME", "/scratch", "--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
        mounted: list[str] = []
        prefixes = {sys.base_prefix, sys.prefix, str(Path(self.python).resolve().parent.parent)}
        for path in [*SYSTEM_DIRS, *sorted(prefixes)]:
            if os.path.exists(path) and not any(path == m or path.startswith(m + "/") for m in mounted):
                kind = "--symlink" if os.path.islink(path) and path in SYSTEM_DIRS else "--ro-bind"
                cmd += [kind, os.readlink(path), path] if kind == "--symlink" else [kind, path, path]
                mounted.append(path)
        cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(64 * 2**20), "--tmpfs", "/tmp", "--bind", str(scratch), "/scratch",
                "--chdir", "/scratch", "--"]
        return cmd + python_args

    def _limits(self, cgroup: Path | None):
        memory = self.memory_mb * 2**20
        cpu = max(1, int(self.timeout) + 1)
        fsize = self.max_file_mb * 2**20
        nproc = self.max_processes
        procs = str(cgroup / "cgroup.procs") if cgroup is not None else ""

        def preexec() -> None:  # in the child, before exec: limits are inherited by bwrap and the program
            if cgroup is not None:  # plain syscalls only: this runs between fork and exec, maybe beside threads
                fd = os.open(procs, os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if cgroup is None and os.geteuid() != 0:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

        return preexec

    def _new_cgroup(self) -> Path | None:
        if self.cgroup_root is None:
            return None
        cgroup = self.cgroup_root / f"llm_recipes_sandbox_{uuid.uuid4().hex[:12]}"
        try:
            cgroup.mkdir()
            (cgroup / "pids.max").write_text(str(self.max_processes))
        except OSError as err:
            logger.warning("sandbox: cannot create pids cgroup %s (%s)", cgroup, err)
            return None
        return cgroup

    @staticmethod
    def _remove_cgroup(cgroup: Path | None) -> None:
        if cgroup is None:
            return
        for _ in range(50):  # kill whatever is left (a process that escaped the process group), then remove
            try:
                pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                cgroup.rmdir()
                return
            except ProcessLookupError:
                continue
            except OSError:
                time.sleep(0.02)
        logger.warning("sandbox: could not remove cgroup %s", cgroup)

    # ------------------------------------------------------------------------------------------ run
    def run(self, program: str, timeout: float | None = None) -> SandboxResult:
        """Run `program` (Python source); status 'ok' when it exits 0 within the time limit."""
        timeout = self.timeout if timeout is None else timeout
        cgroup = self._new_cgroup()
        with tempfile.TemporaryDirectory(prefix="llm_recipes_sandbox_") as scratch:
            Path(scratch, "program.py").write_text(program, encoding="utf-8")
            start = time.monotonic()
            proc = subprocess.Popen(self._command(Path(scratch)), cwd=scratch, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                    preexec_fn=self._limits(cgroup), env={"PATH": "/usr/bin:/bin"} if not self.sandboxed else None)
            try:
                out, err = proc.communicate(timeout=timeout)
                status = "ok" if proc.returncode == 0 else ("killed" if proc.returncode < 0 else "error")
            except subprocess.TimeoutExpired:
                status = "timeout"
                out, err = b"", b""
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._remove_cgroup(cgroup)
                if status == "timeout":
                    out, err = proc.communicate()
            return SandboxResult(status, proc.returncode, out.decode(errors="replace")[-4000:],
                                 err.decode(errors="replace")[-4000:], time.monotonic() - start)
