"""OpenAI fine-tuning on the official ``openai`` SDK: files → fine_tuning.jobs → chat.completions.

Methods: supervised (gpt-4.1 family, gpt-4o, gpt-4o-mini), preference = OpenAI "dpo" (gpt-4.1
family), reinforcement (o4-mini, with the python grader generated from the Verifier). Self-serve
fine-tuning is being shut down: no new jobs after 2027-01-06 (see ``base_models``); tuned models
keep serving until their base model retires, so ``poll``/``register``/``generate`` have no date check.

The client comes from the caller (tests: ``OpenAI(base_url=<loopback fake>)``) or is the SDK's
default, which reads ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` from the environment itself: this
module never reads or stores the key.
"""

from __future__ import annotations

import io
import re
import time
from datetime import date
from typing import Any, Callable

from srl_assets.paid import PROVIDERS
from srl_assets.paid.base import (BaseModelInfo, CostEstimate, DatasetFormatError, DatasetSource, Generation,
                                  JobHandle, JobStatus, PaidFineTuner, ProviderRefused, TunedModel)
from srl_assets.paid.datasets import SYSTEM_PROMPT, check_alternating_chat, check_keys, check_size, to_jsonl
from srl_assets.paid.prices import has_prices, model_prices

SHUTDOWN = date(2027, 1, 6)
SHUTDOWN_NOTE = ("OpenAI is shutting down self-serve fine-tuning (new organisations blocked since 2026-05-07, "
                 "inactive ones since 2026-07-02); existing tuned models keep serving")
IDEMPOTENCY_KEY = "srl_idempotency_key"   # OpenAI metadata key (≤ 64 chars; value ≤ 512)

_MODELS = {  # id -> methods (reference/paid_finetuning.md, 2026-12)
    "gpt-4.1-2025-04-14": ("supervised", "preference"),
    "gpt-4.1-mini-2025-04-14": ("supervised", "preference"),
    "gpt-4.1-nano-2025-04-14": ("supervised", "preference"),
    "gpt-4o-2024-08-06": ("supervised",),
    "gpt-4o-mini-2024-07-18": ("supervised",),
    "o4-mini-2025-04-16": ("reinforcement",),
}
_STATES = {"validating_files": "queued", "queued": "queued", "running": "running", "succeeded": "succeeded",
           "failed": "failed", "cancelled": "cancelled",
           # a paused job is neither done nor failed; it waits (resume it in the OpenAI dashboard)
           "paused": "queued"}
_OPENAI_METHOD = {"supervised": "supervised", "preference": "dpo", "reinforcement": "reinforcement"}
_HYPERPARAMETERS = {
    "supervised": {"n_epochs", "batch_size", "learning_rate_multiplier"},
    "preference": {"n_epochs", "batch_size", "learning_rate_multiplier", "beta"},
    "reinforcement": {"n_epochs", "batch_size", "learning_rate_multiplier", "reasoning_effort",
                      "compute_multiplier", "eval_interval", "eval_samples"},
}
# Ours, not OpenAI's: removed before the request.
_LOCAL_KEYS = {"max_hours", "grader", "seed"}
MIN_EXAMPLES = 10
MAX_EXAMPLE_TOKENS = 65_536


@PROVIDERS.register("openai")
class OpenAIFineTuner(PaidFineTuner):
    name = "openai"

    def __init__(self, *, clock: Callable[[], date] = date.today, client: Any = None,
                 client_factory: Callable[[], Any] | None = None, system_prompt: str = SYSTEM_PROMPT,
                 upload_wait_s: float = 60.0, **clients: Any):
        """``client``: a ready ``openai.OpenAI``; or ``client_factory`` to build one on first use, so a
        dry run (prepare, validate, estimate) needs no key at all."""
        super().__init__(clock=clock, client=client, **clients)
        self._client, self._factory = client, client_factory
        self.system_prompt = system_prompt
        self.upload_wait_s = upload_wait_s

    @property
    def client(self):
        def build():
            import openai  # the SDK reads OPENAI_API_KEY itself
            return (self._factory or openai.OpenAI)()
        return self._lazy("_client", build)

    # -- availability -------------------------------------------------------------------------
    def base_models(self) -> list[BaseModelInfo]:
        return [BaseModelInfo(m, methods, SHUTDOWN, SHUTDOWN_NOTE,
                              model_prices("openai", m) if has_prices("openai", m) else None)
                for m, methods in _MODELS.items()]

    # -- data ---------------------------------------------------------------------------------
    def _head(self, system: str) -> list[dict]:
        text = system or self.system_prompt
        return [{"role": "system", "content": text}] if text else []

    def prepare_dataset(self, method: str, source: DatasetSource, *, base_model: str) -> list[dict]:
        items = source.for_method(method)
        if method == "supervised":
            return [{"messages": [*self._head(e.system), {"role": "user", "content": e.prompt},
                                  {"role": "assistant", "content": e.completion}]} for e in items]
        if method == "preference":
            return [{"input": {"messages": [*self._head(p.system), {"role": "user", "content": p.prompt}]},
                     "preferred_output": [{"role": "assistant", "content": p.chosen}],
                     "non_preferred_output": [{"role": "assistant", "content": p.rejected}]} for p in items]
        # reinforcement: extra keys become item.* for the grader
        return [{"messages": [*self._head(r.system), {"role": "user", "content": r.prompt}], "task": r.task}
                for r in items]

    def validate_dataset(self, method: str, records: list[dict], *, base_model: str) -> None:
        p = self.name
        for i, r in enumerate(records):
            if method == "supervised":
                check_keys(p, i, r, {"messages"}, {"messages", "tools", "parallel_tool_calls"})
                check_alternating_chat(p, i, r["messages"], allowed_keys=frozenset({"role", "content", "weight", "name"}))
            elif method == "preference":
                check_keys(p, i, r, {"input", "preferred_output", "non_preferred_output"},
                           {"input", "preferred_output", "non_preferred_output"})
                if not isinstance(r["input"], dict) or "messages" not in r["input"]:
                    raise DatasetFormatError(p, i, "input must be an object with 'messages'")
                check_alternating_chat(p, i, r["input"]["messages"], must_end_with="user")
                for key in ("preferred_output", "non_preferred_output"):
                    out = r[key]
                    if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], dict)
                            and out[0].get("role") == "assistant" and str(out[0].get("content") or "").strip()):
                        raise DatasetFormatError(p, i, f"{key} must be exactly one non-empty assistant message")
                if r["preferred_output"][0]["content"] == r["non_preferred_output"][0]["content"]:
                    raise DatasetFormatError(p, i, "preferred and non-preferred outputs are identical")
            elif method == "reinforcement":
                check_keys(p, i, r, {"messages"})
                check_alternating_chat(p, i, r["messages"], must_end_with="user")
            else:
                raise ValueError(f"unknown method {method!r}")
        check_size(p, records, min_examples=MIN_EXAMPLES, max_record_tokens=MAX_EXAMPLE_TOKENS)

    def estimate_cost(self, base_model: str, method: str, records: list[dict], hyperparameters: dict) -> CostEstimate:
        return self._estimate_from_prices(base_model, method, records, hyperparameters)

    # -- job ------------------------------------------------------------------------------------
    def upload(self, records: list[dict], name: str) -> str:
        f = self.client.files.create(file=(name, io.BytesIO(to_jsonl(records))), purpose="fine-tune")
        deadline = time.monotonic() + self.upload_wait_s
        while f.status == "uploaded" and time.monotonic() < deadline:  # the API processes files asynchronously
            time.sleep(1.0)
            f = self.client.files.retrieve(f.id)
        if f.status == "error":
            raise DatasetFormatError(self.name, -1, f"OpenAI rejected file {f.id}: {getattr(f, 'status_details', '')}")
        return f.id

    def _method(self, base_model: str, method: str, hyperparameters: dict) -> dict:
        unknown = set(hyperparameters) - _HYPERPARAMETERS[method] - _LOCAL_KEYS
        if unknown:
            raise ValueError(f"openai {method}: unknown hyperparameters {sorted(unknown)}; "
                             f"valid: {sorted(_HYPERPARAMETERS[method])}")
        # None means "let OpenAI choose" and must not be sent (LiteLLM users hit that on Vertex).
        hp = {k: v for k, v in hyperparameters.items() if k in _HYPERPARAMETERS[method] and v is not None}
        kind = _OPENAI_METHOD[method]
        body: dict[str, Any] = {"hyperparameters": hp}
        if method == "reinforcement":
            if not hyperparameters.get("grader"):
                raise ValueError("openai reinforcement needs hyperparameters['grader'] "
                                 "(srl_assets.paid.grader.openai_python_grader)")
            body["grader"] = hyperparameters["grader"]
        return {"type": kind, kind: body}

    def create_job(self, *, base_model: str, method: str, training_uri: str, hyperparameters: dict,
                   idempotency_key: str, suffix: str) -> JobHandle:
        self.check_available(base_model, method)
        existing = self.find_job(idempotency_key)
        if existing is not None:
            return existing
        import openai
        try:
            job = self.client.fine_tuning.jobs.create(
                model=base_model, training_file=training_uri, suffix=suffix[:64] or None,
                metadata={IDEMPOTENCY_KEY: idempotency_key}, seed=hyperparameters.get("seed"),
                method=self._method(base_model, method, hyperparameters))
        except openai.PermissionDeniedError as exc:  # blocked organisation
            raise ProviderRefused(self.name, base_model, f"HTTP 403: {_message(exc)}") from exc
        return JobHandle(self.name, job.id, idempotency_key, base_model, method)

    def find_job(self, idempotency_key: str) -> JobHandle | None:
        for job in self.client.fine_tuning.jobs.list(metadata={IDEMPOTENCY_KEY: idempotency_key}, limit=100):
            # the server filters already; checking again keeps a server that ignores the filter safe
            if (job.metadata or {}).get(IDEMPOTENCY_KEY) == idempotency_key:
                method = job.method.type if job.method is not None else "supervised"
                ours = {v: k for k, v in _OPENAI_METHOD.items()}.get(method, method)
                return JobHandle(self.name, job.id, idempotency_key, job.model, ours, found_existing=True)
        return None

    def poll(self, job_id: str) -> JobStatus:
        job = self.client.fine_tuning.jobs.retrieve(job_id)
        state = _STATES.get(job.status, "unknown")
        error = None
        if state == "failed":
            err = job.error
            parts = [getattr(err, "code", None), getattr(err, "message", None), getattr(err, "param", None)] if err else []
            error = ": ".join(str(p) for p in parts if p) or "failed without an error message from OpenAI"
        return JobStatus(self.name, job.id, state, job.status, error, job.fine_tuned_model, job.trained_tokens,
                         job.model)

    def cancel(self, job_id: str) -> None:
        self.client.fine_tuning.jobs.cancel(job_id)

    def register(self, status: JobStatus) -> TunedModel:
        if status.state != "succeeded" or not status.tuned_model:
            raise ValueError(f"openai job {status.job_id}: only a succeeded job with a model can be registered "
                             f"(state {status.state}, model {status.tuned_model})")
        base = status.base_model or ""
        p = model_prices("openai", base) if has_prices("openai", base) else None
        if p is None:
            raise LookupError(f"openai: no price for base model {base!r} in prices.yaml; "
                              "a tuned model without a price would look free to the selector")
        # OpenAI bills tuned models per token only: no hosting cost.
        return TunedModel(self.name, status.tuned_model, base, status.job_id, p.input_per_1k, p.output_per_1k, 0.0)

    def generate(self, model_id: str, prompts: list[str], max_new_tokens: int,
                 temperature: float = 0.0) -> list[Generation]:
        client = self.client.with_options(timeout=self.call_timeout_s, max_retries=0)
        reasoning = _is_reasoning_model(model_id)
        out = []
        for prompt in prompts:
            t0 = time.perf_counter()
            kwargs: dict[str, Any] = {"max_completion_tokens": max_new_tokens}
            if not reasoning:  # o-series models only accept the default temperature
                kwargs["temperature"] = temperature
            resp = client.chat.completions.create(
                model=model_id, messages=[*self._head(""), {"role": "user", "content": prompt}], **kwargs)
            usage = resp.usage
            out.append(Generation(resp.choices[0].message.content or "",
                                  usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                                  time.perf_counter() - t0))
        return out


def _is_reasoning_model(model_id: str) -> bool:
    """o-series (o1, o3, o4-mini …), also as a tuned id ``ft:<base>:<org>:<suffix>:<id>``."""
    parts = model_id.split(":")
    base = parts[1] if parts[0] == "ft" and len(parts) > 1 else parts[0]
    return re.match(r"o\d", base) is not None


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error", {}).get("message") or exc)
    return str(exc)
