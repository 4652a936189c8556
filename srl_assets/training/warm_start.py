"""Warm-started training children: a server imports torch, transformers and TRL once, then forks a
worker per child; ``python -m srl_assets.training.warm_start --socket S -- -m MODULE ARGS`` is the
child's command, a thin process that hands its job to the server and stands in for the worker.

Why: every training stage runs in a child process (Dagster Pipes), and each child spent 5.5 s of a
2-core machine importing torch + transformers + TRL before its first step: five children per model
type, about 3 of ``make demo``'s 17 minutes. A forked worker starts with those modules loaded. The
standard library's ``multiprocessing.forkserver`` preloads too, but it runs a Python function in a
``multiprocessing`` child, not a command line with its own stdio, environment, exit status and signals,
which is what the Pipes client launches and what a training child is everywhere else (``accelerate
launch``, Kubernetes); hence this small server.

What a worker gets is what a cold ``python -m MODULE ARGS`` would: the thin process's stdin, stdout and
stderr (passed over the socket), its environment, working directory and argv, fresh random seeds,
default signal handlers, and its exit status (or the signal that killed it) back through the thin
process. Signals the thin process receives (SIGINT, SIGTERM, SIGHUP) go on to the worker; a thin
process that goes away takes its worker with it, and so does the server. Variables read when an
interpreter or a library starts (``MALLOC_*``, ``OMP_NUM_THREADS``, ``HF_HUB_OFFLINE``,
``PYTHONUNBUFFERED``) are the server's, so a server serves one environment: the launcher starts one
per distinct environment (``environment_key``) and the thin process checks the key. The server never
runs a job itself (no thread pool, no CUDA context before the fork); it stops when its parent does.

Linux only (``os.pidfd_open``, ``PR_SET_PDEATHSIG``). The thin process runs the command cold
(``os.execv``) whenever the server cannot serve it, so the worst case is the old start-up time.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import hashlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Imported by the server before it forks: what the training stages import (``srl_assets.training.stages``
# imports each stage's module lazily; these are all of them).
PRELOAD = ("torch", "transformers", "trl", "srl_assets.training.child", "srl_assets.training.stages",
           "srl_assets.training.grpo_common", "srl_assets.models.sft", "srl_assets.models.tiny",
           "srl_assets.models.sampler", "srl_assets.srl.step_grpo", "srl_assets.rlvr.rlvr_trainer",
           "srl_assets.performance.evaluation", "srl_assets.training.recipes")
# Variables that differ between the children of one server: the Pipes session's bootstrap (read by
# dagster_pipes when the child opens the session, never at import).
PER_CHILD_PREFIXES = ("DAGSTER_PIPES_",)
HEADER = struct.Struct("!I")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
MAX_SOCKET_DIR = 80  # + "/<16 hex>.sock" stays under AF_UNIX's 107 bytes; a longer folder moves to /tmp


def environment_key(env: Mapping[str, str]) -> str:
    """What a server's environment must match: every variable but the per-child ones."""
    fixed = sorted((k, v) for k, v in env.items() if not k.startswith(PER_CHILD_PREFIXES))
    return hashlib.sha256(json.dumps(fixed).encode()).hexdigest()[:16]


def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    payload = HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], list(fds))
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int, fds: list[int] | None = None) -> bytes:
    buf = b""
    while len(buf) < n:
        if fds is not None and not buf:
            chunk, got, _, _ = socket.recv_fds(sock, n - len(buf), 8)
            fds.extend(got)
        else:
            chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("warm-start peer closed the connection")
        buf += chunk
    return buf


def _recv(sock: socket.socket, fds: list[int] | None = None) -> dict[str, Any]:
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size, fds))
    return json.loads(_recv_exact(sock, size))


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it exits."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the server still stops its workers when it exits
        pass


# ---------------------------------------------------------------------------------------------- server


class Server:
    """Forks a worker per request on a Unix socket; one request per connection."""

    def __init__(self, path: str, key: str, parent_pid: int, ready_fd: int | None = None):
        self.path, self.key, self.parent_pid, self.ready_fd = path, key, parent_pid, ready_fd
        self.start_cwd = os.getcwd()
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.workers: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (connection, pid)

    def serve(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        if self.ready_fd is not None:  # the launcher waits for this line (not on stdout: imports print there)
            os.write(self.ready_fd, f"ready {self.path}\n".encode())
            os.close(self.ready_fd)
        try:
            while os.getppid() == self.parent_pid:
                for event, _ in self.sel.select(timeout=1.0):
                    kind = event.data
                    if kind == "accept":
                        self._accept()
                    elif kind[0] == "worker":
                        self._reap(kind[1])
                    else:  # the thin process's connection: closed (it went away) or spoke out of turn
                        self._client_gone(kind[1])
        finally:
            for pidfd, (conn, pid) in list(self.workers.items()):
                self._kill(pid)
            self.listener.close()
            if os.path.exists(self.path):
                os.unlink(self.path)
            try:  # the launcher's folder, when this was its last server (a launcher killed hard cannot)
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(10.0)  # one silent client must not stall the server
            request = _recv(conn, fds)
            conn.settimeout(None)
            refused = (f"environment key {request.get('key')} is not this server's {self.key}"
                       if request.get("key") != self.key else
                       None if len(fds) == 3 else "expected stdin, stdout and stderr")
            if refused:
                _send(conn, {"refused": refused})
                raise ValueError(refused)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except (OSError, ConnectionError, ValueError) as exc:  # a bad request never stops the server
            if not isinstance(exc, ValueError):  # a refusal: the thin process says why and starts cold
                print(f"warm-start server: request not served: {exc}", file=sys.stderr, flush=True)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        if pid == 0:
            self._become_worker(conn, request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.workers[pidfd] = (conn, pid)
        self.sel.register(pidfd, selectors.EVENT_READ, ("worker", pidfd))
        self.sel.register(conn, selectors.EVENT_READ, ("client", pidfd))
        _send(conn, {"pid": pid})

    def _reap(self, pidfd: int) -> None:
        conn, pid = self.workers.pop(pidfd)
        self.sel.unregister(pidfd)
        if conn.fileno() in self.sel.get_map():  # not when the thin process went first
            self.sel.unregister(conn)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        try:
            _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
        except OSError:
            pass
        conn.close()

    def _client_gone(self, pidfd: int) -> None:
        conn, pid = self.workers[pidfd]
        self.sel.unregister(conn)
        self._kill(pid)  # reaped when its pidfd turns readable

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _become_worker(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        code = 1
        try:
            _die_with_parent()
            self.sel.close()
            self.listener.close()
            for other_conn, _ in self.workers.values():
                other_conn.close()
            for pidfd in self.workers:
                os.close(pidfd)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            conn.close()
            for sig in FORWARDED_SIGNALS:
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(request["env"])
            os.chdir(request["cwd"])
            if sys.path and sys.path[0] in ("", self.start_cwd):  # python -m puts the working directory first
                sys.path[0] = request["cwd"]
            for stream in (sys.stdout, sys.stderr):  # as a fresh interpreter would set them up for this fd
                stream.reconfigure(line_buffering=stream.isatty())
            _reseed()
            code = _run_module(request["argv"])
        except KeyboardInterrupt:  # as python does: the traceback, then die by SIGINT
            import traceback

            traceback.print_exc()
            code = -signal.SIGINT
        except BaseException:  # noqa: BLE001 - the worker reports and exits, whatever happened
            import traceback

            traceback.print_exc()
        finally:
            try:
                atexit._run_exitfuncs()  # what interpreter shutdown would run (logging, wandb)
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                if code < 0:
                    signal.signal(-code, signal.SIG_DFL)
                    os.kill(os.getpid(), -code)
                os._exit(code if code >= 0 else 1)


def _reseed() -> None:
    """A fork copies the server's random state; a cold child would start from fresh entropy."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _run_module(argv: list[str]) -> int:
    """Run ``-m MODULE ARGS`` as ``python -m`` would; returns the exit status."""
    import runpy

    if len(argv) < 2 or argv[0] != "-m":
        raise ValueError(f"warm start runs '-m MODULE [ARGS]', got {argv!r}")
    sys.argv = [argv[1], *argv[2:]]
    sys.modules.pop(argv[1], None)  # preloaded: runpy would warn and run it over the imported copy
    try:
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def serve(path: str, preload: Sequence[str] = PRELOAD, ready_fd: int | None = None) -> None:
    parent, key = os.getppid(), environment_key(os.environ)  # before the imports set their defaults
    for name in preload:
        importlib.import_module(name)
    import threading

    if threading.active_count() != 1:  # a fork would copy a process whose other threads hold locks
        raise RuntimeError(f"warm-start server: {threading.active_count()} threads after the imports "
                           f"({[t.name for t in threading.enumerate()]}); refusing to fork workers")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # CUDA cannot be used again in a forked child
        raise RuntimeError("warm-start server: an import initialized CUDA; refusing to fork workers")
    Server(path, key, parent, ready_fd).serve()


# ------------------------------------------------------------------------------------------ thin client


def _run_cold(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, *argv])


def run_client(path: str, argv: list[str]) -> int:
    """Hand ``argv`` to the server at ``path`` and wait for its worker; run it cold if the server can't."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        _send(sock, {"key": environment_key(os.environ), "env": dict(os.environ), "cwd": os.getcwd(),
                     "argv": argv}, fds=[0, 1, 2])
        reply = _recv(sock)
    except (OSError, ConnectionError) as exc:
        print(f"warm start unavailable ({exc}); starting cold", file=sys.stderr, flush=True)
        sock.close()
        _run_cold(argv)
    if "pid" not in reply:
        print(f"warm start refused ({reply.get('refused')}); starting cold", file=sys.stderr, flush=True)
        sock.close()
        _run_cold(argv)
    pid = reply["pid"]

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    try:
        code = _recv(sock)["exit"]
    except (OSError, ConnectionError):
        print("warm-start server went away before the worker finished", file=sys.stderr, flush=True)
        return 1
    if code < 0:  # killed by a signal: end the same way, as Popen.returncode would show for a cold child
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
        return 128 - code
    return code


# ------------------------------------------------------------------------------------------- launcher


class WarmStarter:
    """Starts and keeps servers (one per child environment) for a launching process.

    ``command(cmd, env)`` returns the thin-process command for a ``[python, -m, module, ...]`` command
    (anything else, a shell string included, comes back unchanged), starting the environment's server first;
    a server that fails to start leaves the commands cold. Servers stop when this process exits.
    """

    def __init__(self, root: str | None = None, ready_timeout_s: float = 180.0, max_servers: int = 2,
                 preload: Sequence[str] = PRELOAD):
        self.root, self.ready_timeout_s, self.max_servers = root, ready_timeout_s, max_servers
        self.preload = tuple(preload)
        self.servers: dict[str, tuple[Any, str]] = {}  # key -> (Popen, socket path)
        self.failed: set[str] = set()
        self._dir: str | None = None
        atexit.register(self.close)

    def command(self, command: str | Sequence[str], env: Mapping[str, str]) -> str | list[str]:
        if isinstance(command, str) or len(command) < 3 or command[0] != sys.executable or command[1] != "-m":
            return command  # a shell string, accelerate launch, python -c: as it is
        path = self._server(env)
        if path is None:
            return command
        return [sys.executable, "-m", __name__, "--socket", path, "--", *command[1:]]

    def _server(self, env: Mapping[str, str]) -> str | None:
        import subprocess
        import tempfile

        key = environment_key(env)
        live = self.servers.get(key)
        if live is not None and live[0].poll() is None:
            return live[1]
        if key in self.failed:
            return None
        while len(self.servers) >= self.max_servers:  # the oldest goes (a new environment replaces it)
            self._stop(next(iter(self.servers)))
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="srl-warm-", dir=self.root)
            if len(self._dir) > MAX_SOCKET_DIR:  # a Unix socket's path has at most 107 bytes
                os.rmdir(self._dir)
                self._dir = tempfile.mkdtemp(prefix="srl-warm-", dir="/tmp")
        path = str(Path(self._dir) / f"{key}.sock")
        server_env = {k: v for k, v in env.items() if not k.startswith(PER_CHILD_PREFIXES)}
        ready_r, ready_w = os.pipe()
        # stdout to /dev/null: what the imports print there ("Running in WANDB offline mode") is no child's
        # output; errors go to stderr, the launcher's.
        proc = subprocess.Popen([sys.executable, "-m", __name__, "--serve", path, "--preload", ",".join(self.preload),
                                 "--ready-fd", str(ready_w)], env=server_env, pass_fds=(ready_w,),
                                stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(ready_w)
        if not self._wait_ready(ready_r):
            self.failed.add(key)
            proc.kill()
            proc.wait()
            print("warm-start server did not start; training children start cold", file=sys.stderr, flush=True)
            return None
        self.servers[key] = (proc, path)
        return path

    def _wait_ready(self, ready_fd: int) -> bool:
        with os.fdopen(ready_fd, "rb") as ready:
            sel = selectors.DefaultSelector()
            sel.register(ready, selectors.EVENT_READ)
            ok = bool(sel.select(timeout=self.ready_timeout_s)) and ready.readline().startswith(b"ready ")
            sel.close()
        return ok

    def _stop(self, key: str) -> None:
        from subprocess import TimeoutExpired

        proc, _ = self.servers.pop(key)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        for key in list(self.servers):
            self._stop(key)
        if self._dir is not None:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--serve", metavar="SOCKET", help="import the training modules, then serve on SOCKET")
    mode.add_argument("--socket", help="run '-- -m MODULE ARGS' in a worker of the server on SOCKET")
    parser.add_argument("--ready-fd", type=int, help="--serve: write 'ready SOCKET' to this descriptor once serving")
    parser.add_argument("--preload", help="--serve: comma-separated modules to import (default: the training "
                        "stages' modules)")
    args = parser.parse_args(argv)
    if args.serve:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind: stop the workers, remove the socket
        serve(args.serve, args.preload.split(",") if args.preload else PRELOAD, args.ready_fd)
        return 0
    if not rest:
        parser.error("the command to run goes after '--': -- -m MODULE [ARGS]")
    return run_client(args.socket, rest)


if __name__ == "__main__":
    sys.exit(main())
