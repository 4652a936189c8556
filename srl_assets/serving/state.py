"""Everything a request shares, built once per process: settings, table reader, router, candidates."""

from __future__ import annotations

import logging
import os
from functools import lru_cache

from srl_assets.domains import MODEL_TYPES, get_domain
from srl_assets.domains.base import Domain, Rules
from srl_assets.rules_integration import RulesIntegration
from srl_assets.serving.candidates import Candidates, ModelCache, load_generator_hooks
from srl_assets.serving.errors import NotFound
from srl_assets.serving.routing import Router, ServingStore
from srl_assets.serving.settings import ServingSettings
from srl_assets.serving.tables import TableReader

log = logging.getLogger("srl_assets.serving")


class ServingState:
    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.reader = TableReader(settings.duckdb_path, settings.duckdb_timeout_s)
        self.store = ServingStore(settings.serving_db_path)
        self.router = Router(self.reader, self.store, settings.selection_ttl_s)
        # Generation runs in one worker process per checkpoint (srl_assets.serving.worker): this process
        # keeps HTTP, validation and verification; the workers share SRL_API_TORCH_THREADS threads.
        self.models = ModelCache(settings.cache_dir, settings.checkpoint_uri,
                                 max(1, min(settings.torch_threads, os.cpu_count() or 1)), settings.batch_size)
        self.candidates = Candidates(self.reader, self.models)
        self.hooks = load_generator_hooks(settings.test_generators)

    def start(self) -> None:
        if self.hooks:
            log.warning("serving: registered generators from SRL_SERVING_TEST_GENERATORS: %s", self.hooks)

    def stop(self) -> None:
        self.models.close()
        self.store.close()

    def domain(self, model_type: str) -> tuple[Domain, Rules]:
        if model_type not in MODEL_TYPES:
            raise NotFound(f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}")
        return _load_rules(model_type)


@lru_cache(maxsize=None)
def _load_rules(model_type: str) -> tuple[Domain, Rules]:
    return get_domain(model_type), RulesIntegration(None).load(model_type)
