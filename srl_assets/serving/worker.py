"""A checkpoint's generation in a process of its own, fed by the API process over a socket.

Why a process: the tiny models are bound by per-step Python overhead, so generation in a thread holds
the GIL most of the time and the event loop (HTTP, JSON, validation, verification) waits for it; with
its own interpreter the worker keeps one core busy with decoding while the API process answers and
queues requests on the other. The worker loads the checkpoint once and runs every request for it
through one ``ContinuousBatch`` (requests join between steps), with ``torch_threads`` threads.

Protocol (``multiprocessing.connection`` messages): the worker sends ``("ready", None)`` or
``("error", message)`` after loading; then it receives ``(request_id, prompts, max_new_tokens,
temperature)`` (``None`` stops it) and sends ``("done", request_id, texts, input_tokens, output_tokens,
{steps, row_steps, max_rows})`` or ``("failed", request_id, message)``. The worker exits when the API
process goes away (its socket closes); the API starts a new one on the next request after a worker died
(requests in flight then get a 503 naming the checkpoint).

    python -m srl_assets.serving.worker CHECKPOINT_DIR TORCH_THREADS SLOTS FD
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def _serve(path: str, threads: int, slots: int, conn: Connection) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        from srl_assets.models.tiny import generate, load_model
        from srl_assets.prompt_contract import render_prompt

        model, tokenizer = load_model(path)
        from srl_assets.models.sampler import unsupported_reason

        engine = None
        if unsupported_reason(model) is None:
            from srl_assets.serving.continuous import ContinuousBatch

            engine = ContinuousBatch(model, tokenizer, slots)
    except Exception as exc:  # the API answers 503 naming the checkpoint
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    if engine is None:  # HF generate: one request at a time
        while (msg := conn.recv()) is not None:
            rid, prompts, max_new_tokens, temperature = msg
            try:
                texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                 batch_size=max(1, min(len(prompts), slots)))
                ins = [len(tokenizer(render_prompt(tokenizer, p))["input_ids"]) for p in prompts]
                outs = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
                conn.send(("done", rid, texts, ins, outs, {"steps": 0, "row_steps": 0, "max_rows": len(prompts)}))
            except Exception as exc:
                conn.send(("failed", rid, f"{type(exc).__name__}: {exc}"))
    while True:
        # Block only when there is nothing to decode; otherwise take what arrived and step.
        while engine.idle or conn.poll():
            msg = conn.recv()
            if msg is None:
                return
            engine.add(*msg)
        try:
            for done in engine.step():
                conn.send(("done", done.request, done.texts, done.input_tokens, done.output_tokens,
                           engine.stats()))
        except Exception as exc:  # every request in flight gets the error; the worker lives on
            for rid in engine.fail_all():
                conn.send(("failed", rid, f"{type(exc).__name__}: {exc}"))


class WorkerDied(RuntimeError):
    pass


class GenerationWorker:
    """The API side of one worker process: ``start()`` (blocking, until the checkpoint is loaded), then
    ``await submit(prompts, max_new_tokens, temperature) -> (texts, input_tokens, output_tokens)``."""

    def __init__(self, path: str, threads: int, slots: int, log_path: Path | None = None):
        self.path, self.threads, self.slots = path, threads, slots
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future] = {}  # touched on the event loop only
        self._loop: asyncio.AbstractEventLoop | None = None
        self.requests = 0
        self.max_rows = 0  # the most rows one decoding step has run (> 1: requests shared a forward pass)
        self.steps = self.row_steps = 0  # decoding steps, and rows summed over them

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.conn is not None

    def start(self, timeout_s: float = 300.0) -> None:
        """Start the process and wait until it has loaded the checkpoint; RuntimeError with its reason."""
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                          os.environ.get("PYTHONPATH")]))}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "srl_assets.serving.worker", self.path, str(self.threads), str(self.slots),
                 str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env, stdout=log, stderr=log)
        finally:
            theirs.close()
            if log is not subprocess.DEVNULL:
                log.close()
        conn = Connection(ours.detach())
        if not conn.poll(timeout_s):
            self.proc.kill()
            raise RuntimeError(f"generation worker did not load the checkpoint in {timeout_s:.0f} s")
        try:
            kind, detail = conn.recv()
        except EOFError:
            raise RuntimeError(f"generation worker exited with status {self.proc.wait()} while loading") from None
        if kind != "ready":
            self.proc.wait()
            raise RuntimeError(detail)
        self.conn = conn

    async def submit(self, prompts: list[str], max_new_tokens: int, temperature: float
                     ) -> tuple[list[str], list[int], list[int]]:
        loop = asyncio.get_running_loop()
        if not self.alive or self.conn is None:
            raise WorkerDied(f"generation worker for {self.path} is not running")
        if self._loop is not loop:
            # Results are read on the event loop itself when the socket is readable: no reader thread
            # to wake and hand the GIL to on every result.
            loop.add_reader(self.conn.fileno(), self._on_readable)
            self._loop = loop
        future = loop.create_future()
        rid = next(self._ids)
        self._pending[rid] = future
        self.conn.send((rid, prompts, max_new_tokens, temperature))
        self.requests += 1
        return await future

    def _on_readable(self) -> None:
        conn = self.conn
        try:
            while conn is not None and conn.poll(0):
                msg = conn.recv()
                future = self._pending.pop(msg[1], None)
                if msg[0] == "done":
                    self.max_rows = max(self.max_rows, msg[5]["max_rows"])
                    self.steps, self.row_steps = msg[5]["steps"], msg[5]["row_steps"]
                    _resolve(future, tuple(msg[2:5]), None)
                else:
                    _resolve(future, None, RuntimeError(msg[2]))
        except (EOFError, OSError):
            self._died()

    def _died(self) -> None:
        if self._loop is not None and self.conn is not None:
            self._loop.remove_reader(self.conn.fileno())
        self._loop, self.conn = None, None
        code = self.proc.wait() if self.proc else None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            _resolve(future, None, WorkerDied(f"generation worker for {self.path} exited (status {code})"))

    def stop(self) -> None:
        conn = self.conn
        if self._loop is not None and conn is not None and not self._loop.is_closed():
            self._loop.remove_reader(conn.fileno())
        if conn is not None:
            try:
                conn.send(None)
            except OSError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _resolve(future: asyncio.Future | None, result: Any, error: BaseException | None) -> None:
    if future is None or future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


if __name__ == "__main__":
    _path, _threads, _slots, _fd = sys.argv[1:5]
    _conn = Connection(int(_fd))
    try:
        _serve(_path, int(_threads), int(_slots), _conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the API process went away
