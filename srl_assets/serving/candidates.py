"""Candidate generators: local checkpoints (each loaded once, by its own worker process), paid models, and
registered generators (a test/extension hook).

Every candidate answers ``generate(tasks, prompts, max_new_tokens, temperature) -> [Generation]``.

* Local stages ("base", "srl", "rlvr", ...): the checkpoint the selection's report evaluated (the
  newest catalog row of that stage created before the report, else the newest), fetched through the
  checkpoint store into a local cache once (a lock per checkpoint). Generation runs in one worker
  process per checkpoint (``srl_assets.serving.worker``): it loads the checkpoint once (this process
  never loads the weights) and decodes every request for it in one continuously refilled batch
  (``srl_assets.serving.continuous``); tokenization, decoding and token counting happen there too.
  The first worker gets ``SRL_API_TORCH_THREADS`` torch threads (default cores - 1), each further
  one what is left, but at least one: more checkpoints than cores means one thread per worker.
  Measured with benchmarks/serve_load.py at 16 clients: a static batcher with the generation thread
  in this process reached 54-66% of the direct throughput; this design 72-87% (2 shared cores).
* ``paid:*``: the ``paid_candidates`` row's provider and model id through ``srl_assets.paid``.
* Registered names (``GENERATORS``): ``SRL_SERVING_TEST_GENERATORS=pkg.mod:register`` calls
  ``register(GENERATORS)`` at start-up; tests register scripted candidates this way (see
  ``srl_assets.serving.scripted``), and a deployment can add its own.
"""

from __future__ import annotations

import abc

import importlib
import shutil
import threading
import time
from dataclasses import dataclass
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
from srl_assets.serving.worker import GenerationWorker, WorkerDied

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
# Local checkpoints


class LoadedModel:
    """A checkpoint fetched into the local cache and loaded by its generation worker process."""

    def __init__(self, key: str, sha256: str, path: str, worker: GenerationWorker):
        self.key, self.sha256, self.path = key, sha256, path
        self.worker = worker

    def describe(self) -> str:
        return f"checkpoint {self.key!r} (sha256 {self.sha256[:12]})"

    async def generate(self, prompts: list[str], max_new_tokens: int, temperature: float
                       ) -> tuple[list[str], list[int], list[int]]:
        try:
            return await self.worker.submit(prompts, max_new_tokens, temperature)
        except WorkerDied as exc:  # the next request starts a new worker
            raise ServiceUnavailable(f"{self.describe()}: {exc}", retry_after_s=1) from exc
        except RuntimeError as exc:
            raise ServiceUnavailable(f"{self.describe()}: generation failed: {exc}") from exc


class ModelCache:
    """One generation worker per checkpoint (sha256) per API process, started on first use; a lock per
    checkpoint so a model that many requests need at once is fetched and loaded exactly once."""

    def __init__(self, cache_dir: Path, checkpoint_uri: str, torch_threads: int = 1, slots: int = 16):
        self.cache_dir = cache_dir
        self.checkpoint_uri = checkpoint_uri
        self.torch_threads = torch_threads
        self.slots = slots
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.loads = 0

    def loaded(self) -> list[dict[str, str]]:
        return [{"checkpoint_key": m.key, "sha256": m.sha256} for m in self._models.values() if m.worker.alive]

    def workers(self) -> list[GenerationWorker]:
        return [m.worker for m in self._models.values()]

    def get(self, key: str, sha256: str) -> LoadedModel:
        with self._guard:
            model = self._models.get(sha256)
            if model is not None and model.worker.alive:
                return model
            lock = self._locks.setdefault(sha256, threading.Lock())
        with lock:
            model = self._models.get(sha256)
            if model is None or not model.worker.alive:
                self._models[sha256] = model = self._load(key, sha256)
                self.loads += 1
        return model

    def close(self) -> None:
        for model in list(self._models.values()):
            model.worker.stop()

    def _load(self, key: str, sha256: str) -> LoadedModel:
        dest = self.cache_dir / sha256[:16]
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            if not (dest / "config.json").exists():
                from resources.checkpoint_store import checkpoint_store_from_uri

                shutil.rmtree(dest, ignore_errors=True)
                staging = dest.with_name(dest.name + ".partial")
                shutil.rmtree(staging, ignore_errors=True)
                checkpoint_store_from_uri(self.checkpoint_uri).fetch(key, str(staging))
                staging.rename(dest)  # atomic: a half-fetched folder is never loaded
            # Every worker gets the threads left to it, so all of them together never run more
            # generation threads than the machine has cores.
            alive = sum(m.worker.alive for m in self._models.values())
            threads = max(1, self.torch_threads - alive)
            worker = GenerationWorker(str(dest), threads, self.slots, log_path=self.cache_dir / "worker.log")
            worker.start()
        except Exception as exc:
            raise ServiceUnavailable(f"checkpoint {key!r} (sha256 {sha256[:12]}) cannot be loaded: "
                                     f"{type(exc).__name__}: {exc}") from exc
        return LoadedModel(key, sha256, str(dest), worker)


class LocalCandidate(CandidateGenerator):
    def __init__(self, info: CandidateInfo, models: ModelCache, loaded: LoadedModel):
        self.info = info
        self.models = models
        self.loaded = loaded

    async def generate(self, tasks: list[Task], prompts: list[str], max_new_tokens: int,
                       temperature: float) -> list[Generation]:
        t0 = time.perf_counter()
        if not self.loaded.worker.alive:  # it died (a 503 told the request in flight): start another
            self.loaded = await run_in_threadpool(self.models.get, self.loaded.key, self.loaded.sha256)
        texts, tokens_in, tokens_out = await self.loaded.generate(prompts, max_new_tokens, temperature)
        latency = time.perf_counter() - t0
        return [Generation(text, n_in, n_out, latency)
                for text, n_in, n_out in zip(texts, tokens_in, tokens_out, strict=True)]


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
    def __init__(self, reader: TableReader, models: ModelCache):
        self.reader = reader
        self.models = models
        self._registered: dict[tuple[str, str], CandidateGenerator] = {}
        self._providers: dict[str, Any] = {}
        self._local: dict[tuple[str, str, str | None], LocalCandidate] = {}

    def stats(self) -> dict[str, int]:
        workers = self.models.workers()
        return {"model_loads": self.models.loads, "requests": sum(w.requests for w in workers),
                "max_rows_per_step": max((w.max_rows for w in workers), default=0),
                "decoding_steps": sum(w.steps for w in workers), "rows_decoded": sum(w.row_steps for w in workers),
                "torch_threads": sum(w.threads for w in workers if w.alive)}

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
        info = CandidateInfo(name=name, kind=LOCAL, stage=name, checkpoint_key=row["key"],
                             checkpoint_sha256=row["sha256"])
        self._local[resolved] = LocalCandidate(info, self.models, loaded)
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
