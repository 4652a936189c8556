"""Candidate generators: local checkpoints (loaded once per process, batched), paid models, and
registered generators (a test/extension hook).

Every candidate answers ``generate(tasks, prompts, max_new_tokens, temperature) -> [Generation]``.

* Local stages ("base", "srl", "rlvr", ...): the checkpoint the selection's report evaluated (the
  newest catalog row of that stage created before the report, else the newest), fetched through the
  checkpoint store into a local cache once and loaded once per process (a lock per checkpoint).
  Requests queue in one ``Batcher`` per checkpoint; one worker thread runs every batch, so there are
  never more generation threads than ``torch.set_num_threads`` allows.
* ``paid:*``: the ``paid_candidates`` row's provider and model id through ``srl_assets.paid``.
* Registered names (``GENERATORS``): ``SRL_SERVING_TEST_GENERATORS=pkg.mod:register`` calls
  ``register(GENERATORS)`` at start-up; tests register scripted candidates this way (see
  ``srl_assets.serving.scripted``), and a deployment can add its own.
"""

from __future__ import annotations

import abc

import asyncio
import importlib
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from srl_assets.domains.base import Domain, Rules
from srl_assets.dynamic_example_generator import Task
from srl_assets.paid.base import Generation  # one generation's text, tokens and latency, as the providers return it
from srl_assets.registry import Registry
from srl_assets.serving.errors import ServiceUnavailable
from srl_assets.serving.routing import SelectionView
from srl_assets.serving.tables import TableMissing, TableReader

LOCAL, PAID, REGISTERED = "local", "paid", "registered"


@dataclass(frozen=True)
class CandidateInfo:
    """What a response says about who answered (never a secret)."""

    name: str
    kind: str
    stage: str | None = None
    checkpoint_key: str | None = None
    checkpoint_sha256: str | None = None
    provider: str | None = None
    model_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class CandidateGenerator(abc.ABC):
    info: CandidateInfo

    @abc.abstractmethod
    async def generate(self, tasks: list[Task], prompts: list[str], max_new_tokens: int,
                       temperature: float) -> list[Generation]:
        """One generation per (task, prompt)."""


#: candidate name -> factory(name, model_type, domain, rules) -> CandidateGenerator
GENERATORS: Registry[Callable[[str, str, Domain, Rules], CandidateGenerator]] = Registry("serving generator")


def load_generator_hooks(spec: str) -> list[str]:
    """Run each ``module:function`` of a comma-separated list with the registry (idempotent)."""
    loaded = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        module_name, _, func_name = entry.partition(":")
        if not func_name:
            raise ValueError(f"SRL_SERVING_TEST_GENERATORS entry {entry!r} must be `module:function`")
        getattr(importlib.import_module(module_name), func_name)(GENERATORS)
        loaded.append(entry)
    return loaded


# ----------------------------------------------------------------------------------------------
# Batching


@dataclass
class _Item:
    prompts: list[str]
    max_new_tokens: int
    temperature: float
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects concurrent requests for one model into batches run by one worker thread.

    ``run_batch(prompts, max_new_tokens, temperature) -> texts`` runs in ``executor``; requests with
    different generation settings go in different batches (greedy output must not depend on a
    neighbour's settings).

    How long to wait for a batch to fill: clients that got their answers from one batch send their
    next requests a few milliseconds apart, so taking only what is queued would split them into a
    batch of one and a batch of the rest. The batcher remembers how many requests were around during
    the last batch (its own plus those that queued while it ran) and waits for that many, but never
    longer than ``wait_s`` nor the last batch's run time (a lone client waits at most once). With a
    quarter of the run time as that cap, 16 closed-loop clients in benchmarks/serve_load.py settled into
    alternating batches of ~7 (54% of direct throughput over 96 requests); with the whole run time,
    batches of ~9 (65-66%).
    """

    def __init__(self, run_batch: Callable[[list[str], int, float], list[str]], executor: ThreadPoolExecutor,
                 max_batch: int, wait_s: float):
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self.batches_run = 0
        self.requests_batched = 0
        self._expected = 1  # requests seen around the last batch
        self._last_run_s = 0.0

    async def submit(self, prompts: list[str], max_new_tokens: int, temperature: float) -> list[str]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run())
        item = _Item(prompts, max_new_tokens, temperature, loop.create_future())
        self._queue.put_nowait(item)
        return await item.future

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        items = [await self._queue.get()]
        while not self._queue.empty() and sum(len(i.prompts) for i in items) < self.max_batch:
            items.append(self._queue.get_nowait())
        target = min(self._expected, self.max_batch)
        deadline = loop.time() + min(self.wait_s, 1.0 * self._last_run_s)
        while len(items) < target and sum(len(i.prompts) for i in items) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return items

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            groups: dict[tuple[int, float], list[_Item]] = {}
            for item in items:
                groups.setdefault((item.max_new_tokens, item.temperature), []).append(item)
            t0 = loop.time()
            for (max_new_tokens, temperature), group in groups.items():
                prompts = [p for item in group for p in item.prompts]
                try:
                    texts = await loop.run_in_executor(self.executor, self.run_batch, prompts, max_new_tokens,
                                                       temperature)
                    self.batches_run += 1
                    self.requests_batched += len(group)
                except Exception as exc:  # every waiting request gets the error; the worker lives on
                    for item in group:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                start = 0
                for item in group:
                    if not item.future.done():
                        item.future.set_result(texts[start:start + len(item.prompts)])
                    start += len(item.prompts)
            self._last_run_s = loop.time() - t0
            self._expected = len(items) + self._queue.qsize()


# ----------------------------------------------------------------------------------------------
# Local checkpoints


class LoadedModel:
    def __init__(self, key: str, sha256: str, path: str, model: Any, tokenizer: Any):
        self.key, self.sha256, self.path = key, sha256, path
        self.model, self.tokenizer = model, tokenizer
        self.max_batch = 16  # set by Candidates from SRL_API_BATCH_SIZE

    def run_batch(self, prompts: list[str], max_new_tokens: int, temperature: float) -> list[str]:
        from srl_assets.models.tiny import generate

        # One request's samples may exceed the batch size; generate() then runs them in chunks.
        return generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                        temperature=temperature, batch_size=max(1, min(len(prompts), self.max_batch)))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class ModelCache:
    """One loaded model per checkpoint (sha256) per process; a lock per checkpoint so a model that
    many requests need at once is fetched and loaded exactly once."""

    def __init__(self, cache_dir: Path, checkpoint_uri: str):
        self.cache_dir = cache_dir
        self.checkpoint_uri = checkpoint_uri
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.loads = 0

    def loaded(self) -> list[dict[str, str]]:
        return [{"checkpoint_key": m.key, "sha256": m.sha256} for m in self._models.values()]

    def get(self, key: str, sha256: str) -> LoadedModel:
        with self._guard:
            if sha256 in self._models:
                return self._models[sha256]
            lock = self._locks.setdefault(sha256, threading.Lock())
        with lock:
            if sha256 not in self._models:
                self._models[sha256] = self._load(key, sha256)
                self.loads += 1
        return self._models[sha256]

    def _load(self, key: str, sha256: str) -> LoadedModel:
        from srl_assets.models.tiny import load_model

        dest = self.cache_dir / sha256[:16]
        try:
            if not (dest / "config.json").exists():
                from resources.checkpoint_store import checkpoint_store_from_uri

                shutil.rmtree(dest, ignore_errors=True)
                staging = dest.with_name(dest.name + ".partial")
                shutil.rmtree(staging, ignore_errors=True)
                checkpoint_store_from_uri(self.checkpoint_uri).fetch(key, str(staging))
                staging.rename(dest)  # atomic: a half-fetched folder is never loaded
            model, tokenizer = load_model(str(dest))
        except Exception as exc:
            raise ServiceUnavailable(f"checkpoint {key!r} (sha256 {sha256[:12]}) cannot be loaded: "
                                     f"{type(exc).__name__}: {exc}") from exc
        return LoadedModel(key, sha256, str(dest), model, tokenizer)


class LocalCandidate(CandidateGenerator):
    def __init__(self, info: CandidateInfo, loaded: LoadedModel, batcher: Batcher):
        self.info = info
        self.loaded = loaded
        self.batcher = batcher

    async def generate(self, tasks: list[Task], prompts: list[str], max_new_tokens: int,
                       temperature: float) -> list[Generation]:
        t0 = time.perf_counter()
        texts = await self.batcher.submit(prompts, max_new_tokens, temperature)
        latency = time.perf_counter() - t0
        return [Generation(text, self.loaded.count_tokens(prompt), self.loaded.count_tokens(text), latency)
                for prompt, text in zip(prompts, texts, strict=True)]


class PaidCandidate(CandidateGenerator):
    def __init__(self, info: CandidateInfo, provider: Any):
        self.info = info
        self.provider = provider

    async def generate(self, tasks: list[Task], prompts: list[str], max_new_tokens: int,
                       temperature: float) -> list[Generation]:
        try:
            out = await run_in_threadpool(self.provider.generate, self.info.model_id, prompts, max_new_tokens,
                                          temperature)
        except Exception as exc:  # the provider's outage is a 503 naming it, not a crash
            raise ServiceUnavailable(f"paid candidate {self.info.name} ({self.info.provider} model "
                                     f"{self.info.model_id}) failed: {type(exc).__name__}: {exc}",
                                     retry_after_s=5) from exc
        return list(out)  # the providers return the same Generation records


# ----------------------------------------------------------------------------------------------
# Resolving a candidate name


class Candidates:
    def __init__(self, reader: TableReader, models: ModelCache, executor: ThreadPoolExecutor, max_batch: int,
                 wait_s: float):
        self.reader = reader
        self.models = models
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._batchers: dict[str, Batcher] = {}
        self._registered: dict[tuple[str, str], CandidateGenerator] = {}
        self._providers: dict[str, Any] = {}
        self._local: dict[tuple[str, str, str | None], LocalCandidate] = {}

    def stats(self) -> dict[str, int]:
        return {"model_loads": self.models.loads, "batches_run": sum(b.batches_run for b in self._batchers.values()),
                "requests_batched": sum(b.requests_batched for b in self._batchers.values())}

    def registered_names(self) -> set[str]:
        return set(GENERATORS.names())

    async def get(self, name: str, model_type: str, domain: Domain, rules: Rules,
                  view: SelectionView) -> CandidateGenerator:
        if name in GENERATORS:
            key = (name, model_type)
            if key not in self._registered:
                self._registered[key] = GENERATORS.get(name)(name, model_type, domain, rules)
            return self._registered[key]
        if name.startswith("paid:"):
            return self._paid(name, model_type, view)
        # Resolved once per selection report: a catalog read per request would serialize requests on
        # DuckDB before they ever reach the batcher.
        resolved = (model_type, name, view.report_id)
        if resolved in self._local:
            return self._local[resolved]
        row = await run_in_threadpool(self._catalog_row, name, model_type, view)
        loaded = await run_in_threadpool(self.models.get, row["key"], row["sha256"])
        loaded.max_batch = self.max_batch
        batcher = self._batchers.get(loaded.sha256)
        if batcher is None:
            batcher = self._batchers[loaded.sha256] = Batcher(loaded.run_batch, self.executor, self.max_batch,
                                                              self.wait_s)
        info = CandidateInfo(name=name, kind=LOCAL, stage=name, checkpoint_key=row["key"],
                             checkpoint_sha256=row["sha256"])
        self._local[resolved] = LocalCandidate(info, loaded, batcher)
        return self._local[resolved]

    def _catalog_row(self, stage: str, model_type: str, view: SelectionView) -> dict[str, Any]:
        try:
            rows = self.reader.rows("checkpoints", "SELECT * FROM checkpoints WHERE model_type = ? AND stage = ? "
                                    "ORDER BY created_at", [model_type, stage])
        except TableMissing as exc:
            raise ServiceUnavailable(f"candidate {stage!r} of {model_type!r} has no checkpoint: {exc}") from None
        if not rows:
            raise ServiceUnavailable(f"candidate {stage!r} of {model_type!r} has no checkpoint in the catalog")
        report = view.candidates.get(stage)
        named = (report or {}).get("checkpoint_sha256")
        if named:  # the report names the checkpoint it evaluated
            match = [r for r in rows if r["sha256"] == named]
            if match:
                return match[-1]
            raise ServiceUnavailable(f"candidate {stage!r} of {model_type!r}: checkpoint sha256 {named[:12]} that "
                                     f"report {view.report_id} evaluated is not in the catalog")
        if report is not None:
            before = [r for r in rows if str(r["created_at"]) <= str(report["created_at"])]
            if before:
                return before[-1]
        return rows[-1]

    def _paid(self, name: str, model_type: str, view: SelectionView) -> CandidateGenerator:
        row = view.paid.get(name)
        if row is None:
            raise ServiceUnavailable(f"paid candidate {name} cannot be served: no paid_candidates row for "
                                     f"{model_type!r}")
        try:
            from srl_assets.paid import get_provider

            provider = self._providers.get(row["provider"]) or get_provider(row["provider"])
            self._providers[row["provider"]] = provider
        except Exception as exc:
            raise ServiceUnavailable(f"paid candidate {name} cannot be served yet: {type(exc).__name__}: {exc}") \
                from exc
        info = CandidateInfo(name=name, kind=PAID, provider=row["provider"], model_id=row["model_id"])
        return PaidCandidate(info, provider)
