"""Gemini tuning on Vertex AI through ``google-genai`` in Vertex ("enterprise") mode.

Cycle: records → Cloud Storage (google-cloud-storage) → ``tunings.tune`` labelled with the
idempotency key → ``tunings.get`` → the tuned model's endpoint → ``models.generate_content``.
Tuned Gemini models are served on a Google-managed endpoint and billed per token like their base
model, so ``register`` deploys nothing and hosting costs 0 per hour.

Methods: supervised (SUPERVISED_FINE_TUNING), preference (PREFERENCE_TUNING) and reinforcement
(REINFORCEMENT_TUNING with a Python reward snippet generated from the project's Verifier,
``paid.grader.vertex_reward_snippet``, passed as ``hyperparameters["grader"]``). The Gemini
Developer API has had no tuning since 2025-05; only Vertex tunes.

Configuration (keyword arguments, as ``resources.paid`` passes them, else the environment):
``project`` (SRL_VERTEX_PROJECT or GOOGLE_CLOUD_PROJECT), ``location`` (SRL_VERTEX_LOCATION or
GOOGLE_CLOUD_LOCATION, default us-central1), ``bucket`` (SRL_VERTEX_BUCKET: a bucket name, or
``gs://bucket/prefix``; the tuning service agent must be able to read it), ``base_url`` and
``storage_endpoint`` (API URL overrides). Credentials are the SDKs' own lookup (Application Default
Credentials); they are never read, logged or stored here. The one exception is ``access_token``, a
fixed bearer accepted only with ``base_url`` (a loopback fake or a proxy; tests). An unknown
keyword is an error.
No Dagster here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import warnings
from datetime import date
from typing import Any, Callable

from srl_assets.paid import PROVIDERS
from srl_assets.paid import prices as price_table
from srl_assets.paid.base import (BaseModelInfo, ChatExample, CostEstimate, DatasetFormatError, DatasetSource,
                                  Generation, JobHandle, JobStatus, PaidFineTuner, PaidFineTuningError,
                                  PreferencePair, ProviderRefused, ReinforcementItem, TunedModel)
from srl_assets.paid.datasets import SYSTEM_PROMPT, check_size, to_jsonl

log = logging.getLogger(__name__)

LABEL_KEY = "srl_idempotency_key"  # label keys: [a-z][a-z0-9_-]*; no "-" so list filters parse it plainly
_METHOD = {"supervised": "SUPERVISED_FINE_TUNING", "preference": "PREFERENCE_TUNING",
           "reinforcement": "REINFORCEMENT_TUNING"}
_STATE = {
    "JOB_STATE_QUEUED": "queued", "JOB_STATE_PENDING": "queued",
    "JOB_STATE_RUNNING": "running", "JOB_STATE_UPDATING": "running", "JOB_STATE_PAUSED": "running",
    "JOB_STATE_CANCELLING": "running",
    "JOB_STATE_SUCCEEDED": "succeeded",
    "JOB_STATE_FAILED": "failed", "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
}
# Our hyperparameter names → CreateTuningJobConfig fields; which methods take them.
_HYPER = {
    "epoch_count": ("epoch_count", ("supervised", "preference", "reinforcement")),
    "n_epochs": ("epoch_count", ("supervised", "preference", "reinforcement")),
    "learning_rate_multiplier": ("learning_rate_multiplier", ("supervised", "preference", "reinforcement")),
    "adapter_size": ("adapter_size", ("supervised", "preference", "reinforcement")),
    "batch_size": ("batch_size", ("supervised", "reinforcement")),
    "beta": ("beta", ("preference",)),
    "samples_per_prompt": ("samples_per_prompt", ("reinforcement",)),
}
_ESTIMATE_ONLY = {"max_hours"}  # read by the cost estimate, never sent
_ADAPTER = {1: "ADAPTER_SIZE_ONE", 2: "ADAPTER_SIZE_TWO", 4: "ADAPTER_SIZE_FOUR", 8: "ADAPTER_SIZE_EIGHT",
            16: "ADAPTER_SIZE_SIXTEEN", 32: "ADAPTER_SIZE_THIRTY_TWO"}

# Format limits of Gemini tuning datasets (Vertex "About supervised fine-tuning" / "preference
# tuning" pages, 2026-12): 131,072 tokens per example for Gemini 2.5, a JSONL file of at most 1 GB.
MAX_EXAMPLE_TOKENS = 131_072
MAX_FILE_BYTES = 1_000_000_000
MIN_EXAMPLES = 1

_CATALOG = (
    # (id, methods, available_until, note)
    ("gemini-2.5-pro", ("supervised", "preference"), None, ""),
    ("gemini-2.5-flash", ("supervised", "preference", "reinforcement"), None, ""),
    ("gemini-2.5-flash-lite", ("supervised", "preference"), None, ""),
)


def label_value(idempotency_key: str) -> str:
    """The key as a valid label value: lowercase, [a-z0-9_-], at most 63 characters (hashed when
    longer, so two long keys never collide on a shared prefix)."""
    value = re.sub(r"[^a-z0-9_-]", "-", idempotency_key.lower())
    if len(value) > 63:
        value = value[:46] + "-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    return value


@PROVIDERS.register("vertex")
class VertexFineTuner(PaidFineTuner):
    name = "vertex"

    def __init__(self, *, clock: Callable[[], date] = date.today, client: Any = None, storage_client: Any = None,
                 project: str | None = None, location: str | None = None, bucket: str | None = None,
                 base_url: str | None = None, storage_endpoint: str | None = None, access_token: str | None = None,
                 system_prompt: str = SYSTEM_PROMPT, **unknown: Any):
        if unknown:  # a misspelt setting must not be dropped silently
            raise TypeError(f"vertex: unknown settings {sorted(unknown)}; valid: client, storage_client, project, "
                            "location, bucket, base_url, storage_endpoint, access_token, system_prompt, clock")
        if access_token and not base_url:
            # Real Vertex always authenticates through Application Default Credentials (refreshed,
            # scoped); a fixed bearer is only for a stand-in at base_url (a loopback fake, a proxy).
            raise ValueError("vertex: access_token is only accepted together with base_url (a test fake or "
                             "proxy); Vertex itself uses Application Default Credentials")
        super().__init__(clock=clock, client=client, storage_client=storage_client)
        self.project = project or os.environ.get("SRL_VERTEX_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.location = (location or os.environ.get("SRL_VERTEX_LOCATION") or os.environ.get("GOOGLE_CLOUD_LOCATION")
                         or "us-central1")
        self.bucket = (bucket or os.environ.get("SRL_VERTEX_BUCKET") or "").rstrip("/")
        self.base_url, self.storage_endpoint = base_url, storage_endpoint
        self._access_token = access_token  # never logged, never in repr or records
        self.system_prompt = system_prompt  # sent with every generate, as in the training data
        self._client, self._storage = client, storage_client

    # -- clients (built on first use from the SDKs' own credential lookup) ----------------------
    @property
    def client(self):
        def build():
            from google import genai
            from google.genai import types

            http_options = types.HttpOptions(base_url=self.base_url) if self.base_url else None
            return genai.Client(enterprise=True, project=self._need_project(), location=self.location,
                                http_options=http_options, credentials=self._static_credentials())
        return self._lazy("_client", build)

    def _static_credentials(self):
        """google-auth credentials holding the fixed bearer, or None for the SDKs' ADC lookup."""
        if not self._access_token:
            return None
        from google.oauth2.credentials import Credentials

        return Credentials(token=self._access_token)

    @property
    def storage(self):
        def build():
            from google.cloud import storage

            options = {"api_endpoint": self.storage_endpoint} if self.storage_endpoint else None
            return storage.Client(project=self._need_project(), client_options=options,
                                  credentials=self._static_credentials())
        return self._lazy("_storage", build)

    def _need_project(self) -> str:
        if not self.project:
            raise ValueError("vertex: no Google Cloud project; set GOOGLE_CLOUD_PROJECT or pass project=")
        return self.project

    # -- availability ----------------------------------------------------------------------------
    def base_models(self) -> list[BaseModelInfo]:
        return [BaseModelInfo(id=m, methods=methods, available_until=until, note=note,
                              prices=price_table.model_prices(self.name, m) if price_table.has_prices(self.name, m)
                              else None)
                for m, methods, until, note in _CATALOG]

    # -- data ------------------------------------------------------------------------------------
    def prepare_dataset(self, method: str, source: DatasetSource, *, base_model: str) -> list[dict]:
        return [_record(method, item) for item in source.for_method(method)]

    def validate_dataset(self, method: str, records: list[dict], *, base_model: str) -> None:
        if method not in _METHOD:
            raise ValueError(f"vertex: unknown method {method!r}; valid: {sorted(_METHOD)}")
        allowed = {"supervised": {"systemInstruction", "contents"},
                   "preference": {"systemInstruction", "contents", "completions"},
                   "reinforcement": {"systemInstruction", "contents", "references"}}[method]
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise DatasetFormatError(self.name, i, f"record must be a JSON object, got {type(record).__name__}")
            extra = set(record) - allowed
            if extra:
                raise DatasetFormatError(self.name, i, f"keys not allowed for {method}: {sorted(extra)} "
                                         f"(allowed: {sorted(allowed)})")
            if "systemInstruction" in record:
                _check_content(self.name, i, record["systemInstruction"], "systemInstruction",
                               roles=("system", "user", None))
            last = "model" if method == "supervised" else "user"
            _check_contents(self.name, i, record.get("contents"), must_end_with=last)
            if method == "preference":
                _check_completions(self.name, i, record.get("completions"))
            if method == "reinforcement":
                refs = record.get("references")
                if not isinstance(refs, dict) or not isinstance(refs.get("task"), str):
                    raise DatasetFormatError(self.name, i, "references.task must be the task row as a JSON string "
                                             "(the reward snippet reads it)")
        check_size(self.name, records, min_examples=MIN_EXAMPLES, max_record_tokens=MAX_EXAMPLE_TOKENS,
                   max_file_bytes=MAX_FILE_BYTES)

    def estimate_cost(self, base_model: str, method: str, records: list[dict],
                      hyperparameters: dict) -> CostEstimate:
        return self._estimate_from_prices(base_model, method, records, hyperparameters)

    # -- job -------------------------------------------------------------------------------------
    def upload(self, records: list[dict], name: str) -> str:
        if not self.bucket:
            raise ValueError("vertex: the upload needs a Cloud Storage bucket (SRL_VERTEX_BUCKET or bucket=)")
        bucket, _, prefix = self.bucket.removeprefix("gs://").partition("/")
        prefix = prefix or "srl-paid"
        path = f"{prefix}/{name}.jsonl"
        blob = self.storage.bucket(bucket).blob(path)
        blob.upload_from_string(to_jsonl(records), content_type="application/jsonl")
        uri = f"gs://{bucket}/{path}"
        log.info("vertex: uploaded %d records to %s", len(records), uri)
        return uri

    def create_job(self, *, base_model: str, method: str, training_uri: str, hyperparameters: dict,
                   idempotency_key: str, suffix: str) -> JobHandle:
        from google.genai import errors, types

        self.check_available(base_model, method)
        existing = self.find_job(idempotency_key)
        if existing is not None:
            log.info("vertex: job %s already carries key %s; not creating another", existing.job_id, idempotency_key)
            return existing
        config = types.CreateTuningJobConfig(method=_METHOD[method], labels={LABEL_KEY: label_value(idempotency_key)},
                                             tuned_model_display_name=suffix[:128] or None,
                                             **self._hyper(method, hyperparameters))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the SDK marks tuning "experimental" on every call
                job = self.client.tunings.tune(base_model=base_model,
                                               training_dataset=types.TuningDataset(gcs_uri=training_uri),
                                               config=config)
        except errors.ClientError as error:
            if error.code in (403, 404):
                raise ProviderRefused(self.name, base_model, f"HTTP {error.code}: {error.message}") from error
            raise
        log.info("vertex: created tuning job %s (%s, %s)", job.name, base_model, method)
        return JobHandle(self.name, job.name, idempotency_key, base_model, method)

    def _hyper(self, method: str, hyperparameters: dict) -> dict:
        """CreateTuningJobConfig fields; None values are dropped (Vertex rejects explicit nulls),
        an unknown name or one the method does not take is an error naming it."""
        out: dict[str, Any] = {}
        for key, value in hyperparameters.items():
            if value is None or key in _ESTIMATE_ONLY:
                continue
            if key == "grader":  # the same key as OpenAI's grader, so the job store keeps it out of records
                if method != "reinforcement":
                    raise ValueError("vertex: grader only applies to method 'reinforcement'")
                if not isinstance(value, str) or "def evaluate(" not in value:
                    raise ValueError("vertex: hyperparameters['grader'] must be Python source defining "
                                     "evaluate(example, response) (paid.grader.vertex_reward_snippet)")
                out["reward_config"] = {"reward_name": "srl_verifier",
                                        "code_execution_reward_scorer": {"python_code_snippet": value}}
                continue
            if key not in _HYPER:
                raise ValueError(f"vertex: unknown hyperparameter {key!r}; valid: "
                                 f"{sorted([*_HYPER, 'grader', *_ESTIMATE_ONLY])}")
            field, methods = _HYPER[key]
            if method not in methods:
                raise ValueError(f"vertex: hyperparameter {key!r} does not apply to method {method!r}")
            if field == "adapter_size":
                if int(value) not in _ADAPTER:
                    raise ValueError(f"vertex: adapter_size must be one of {sorted(_ADAPTER)}, got {value!r}")
                value = _ADAPTER[int(value)]
            out[field] = value
        if method == "reinforcement" and "reward_config" not in out:
            raise ValueError("vertex: reinforcement needs hyperparameters['grader'], the reward snippet "
                             "(paid.grader.vertex_reward_snippet(model_type, rules))")
        return out

    def find_job(self, idempotency_key: str) -> JobHandle | None:
        from google.genai import types

        value = label_value(idempotency_key)
        pager = self.client.tunings.list(config=types.ListTuningJobsConfig(filter=f'labels.{LABEL_KEY}="{value}"'))
        for job in pager:
            # The filter is the server's; check the label here too, so a server that ignored it
            # cannot hand back someone else's job.
            if (job.labels or {}).get(LABEL_KEY) == value:
                return JobHandle(self.name, job.name, idempotency_key, job.base_model or "",
                                 _method_of(job), found_existing=True)
        return None

    def poll(self, job_id: str) -> JobStatus:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown state makes the SDK warn; we log it below
            job = self.client.tunings.get(name=job_id)
        provider_state = getattr(job.state, "value", job.state) or "JOB_STATE_UNSPECIFIED"
        state = _STATE.get(str(provider_state), "unknown")
        endpoint = job.tuned_model.endpoint if job.tuned_model else None
        if provider_state == "JOB_STATE_PARTIALLY_SUCCEEDED":
            state = "succeeded" if endpoint else "failed"
        if state == "unknown":
            log.warning("vertex: job %s is in state %r, which this code does not know; polling again",
                        job_id, provider_state)
        error = None
        if job.error is not None and state in ("failed", "cancelled"):
            error = f"{job.error.message or 'no message'} (code {job.error.code})"
        elif state == "failed":
            error = f"job ended {provider_state} without an error message"
        return JobStatus(self.name, job_id, state, str(provider_state), error=error,
                         tuned_model=endpoint if state == "succeeded" else None,
                         trained_tokens=_billable_tokens(job), base_model=job.base_model)

    def cancel(self, job_id: str) -> None:
        self.client.tunings.cancel(name=job_id)
        log.info("vertex: cancel requested for %s", job_id)

    def register(self, status: JobStatus) -> TunedModel:
        if status.state != "succeeded" or not status.tuned_model:
            raise PaidFineTuningError(f"vertex: job {status.job_id} is {status.state} ({status.provider_state}), "
                                      "not succeeded with an endpoint; nothing to register")
        base = status.base_model or ""
        p = price_table.model_prices(self.name, base) if price_table.has_prices(self.name, base) else None
        if p is None:
            raise LookupError(f"vertex: no price for base model {base!r} of job {status.job_id} in prices.yaml")
        return TunedModel(self.name, status.tuned_model, base, status.job_id, input_per_1k_usd=p.input_per_1k,
                          output_per_1k_usd=p.output_per_1k, hosting_per_hour_usd=p.hosting_per_hour,
                          extra={"endpoint": status.tuned_model, "billing": "per token, as the base model"})

    def generate(self, model_id: str, prompts: list[str], max_new_tokens: int,
                 temperature: float = 0.0) -> list[Generation]:
        from google.genai import types

        # call_timeout_s bounds each HTTP call in the SDK (milliseconds there); paid.evaluation retries.
        config = types.GenerateContentConfig(max_output_tokens=max_new_tokens, temperature=temperature,
                                             system_instruction=self.system_prompt or None,
                                             http_options=types.HttpOptions(timeout=int(self.call_timeout_s * 1000)))
        out = []
        for prompt in prompts:
            started = time.monotonic()
            response = self.client.models.generate_content(model=model_id, contents=prompt, config=config)
            usage = response.usage_metadata
            out.append(Generation(text=response.text or "",
                                  input_tokens=int(usage.prompt_token_count or 0) if usage else 0,
                                  output_tokens=int(usage.candidates_token_count or 0) if usage else 0,
                                  latency_s=time.monotonic() - started))
        return out


# ------------------------------------------------------------------------------------ records
def _text(text: str, role: str | None = None) -> dict:
    content: dict[str, Any] = {"parts": [{"text": text}]}
    if role:
        content = {"role": role, **content}
    return content


def _record(method: str, item: ChatExample | PreferencePair | ReinforcementItem) -> dict:
    record: dict[str, Any] = {}
    if item.system:
        record["systemInstruction"] = _text(item.system, "system")
    if method == "supervised":
        record["contents"] = [_text(item.prompt, "user"), _text(item.completion, "model")]
    elif method == "preference":
        record["contents"] = [_text(item.prompt, "user")]
        record["completions"] = [{"score": 1.0, "completion": _text(item.chosen, "model")},
                                 {"score": 0.0, "completion": _text(item.rejected, "model")}]
    elif method == "reinforcement":
        record["contents"] = [_text(item.prompt, "user")]
        record["references"] = {"task": json.dumps(item.task, sort_keys=True, default=str)}
    else:
        raise ValueError(f"vertex: unknown method {method!r}; valid: {sorted(_METHOD)}")
    return record


# ------------------------------------------------------------------------------------- checks
def _check_content(provider: str, index: int, content: Any, where: str, roles: tuple) -> None:
    if not isinstance(content, dict):
        raise DatasetFormatError(provider, index, f"{where} must be an object with 'parts'")
    extra = set(content) - {"role", "parts"}
    if extra:
        raise DatasetFormatError(provider, index, f"{where} has keys not allowed: {sorted(extra)}")
    if content.get("role") not in roles:
        raise DatasetFormatError(provider, index, f"{where} role must be one of {[r for r in roles if r]}, "
                                 f"got {content.get('role')!r}")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise DatasetFormatError(provider, index, f"{where} needs a non-empty 'parts' list")
    for k, part in enumerate(parts):
        if not isinstance(part, dict) or set(part) != {"text"} or not isinstance(part["text"], str) \
                or not part["text"].strip():
            raise DatasetFormatError(provider, index, f"{where} part {k} must be {{'text': <non-empty string>}}")


def _check_contents(provider: str, index: int, contents: Any, must_end_with: str) -> None:
    if not isinstance(contents, list) or not contents:
        raise DatasetFormatError(provider, index, "contents must be a non-empty list")
    for j, content in enumerate(contents):
        _check_content(provider, index, content, f"contents[{j}]", roles=("user", "model"))
        want = ("user", "model")[j % 2]
        if content["role"] != want:
            raise DatasetFormatError(provider, index, f"roles must alternate user/model starting with user; "
                                     f"contents[{j}] is {content['role']!r}, expected {want!r}")
    if contents[-1]["role"] != must_end_with:
        raise DatasetFormatError(provider, index, f"the last turn must be {must_end_with!r}, "
                                 f"got {contents[-1]['role']!r}")


def _check_completions(provider: str, index: int, completions: Any) -> None:
    if not isinstance(completions, list) or len(completions) != 2:
        raise DatasetFormatError(provider, index, "completions must be a list of exactly 2 scored completions")
    scores = []
    for k, c in enumerate(completions):
        if not isinstance(c, dict) or set(c) != {"score", "completion"}:
            raise DatasetFormatError(provider, index, f"completions[{k}] must have exactly 'score' and 'completion'")
        if not isinstance(c["score"], (int, float)):
            raise DatasetFormatError(provider, index, f"completions[{k}].score must be a number")
        _check_content(provider, index, c["completion"], f"completions[{k}].completion", roles=("model",))
        scores.append(c["score"])
    if scores[0] == scores[1]:
        raise DatasetFormatError(provider, index, "the two completions must have different scores")


def _method_of(job: Any) -> str:
    if job.preference_optimization_spec is not None:
        return "preference"
    if job.reinforcement_tuning_spec is not None:
        return "reinforcement"
    return "supervised"


def _billable_tokens(job: Any) -> int | None:
    stats = job.tuning_data_stats
    if stats is None:
        return None
    for part in (stats.supervised_tuning_data_stats, stats.preference_optimization_data_stats):
        if part is not None and part.total_billable_token_count is not None:
            return int(part.total_billable_token_count)
    return None
