"""The contract every hosted ("paid") fine-tuner implements, with the records it exchanges.

One cycle, the same for every provider:

    check_available → prepare_dataset → validate_dataset → estimate_cost → upload
        → create_job (tagged with an idempotency key) → poll … → register → generate

Providers differ in SDK, data format and job states; the orchestration (dry run, spend caps,
intent recorded before create, the sensor) is written once against this class. Implementations
take their SDK clients as keyword arguments so tests can pass clients pointed at loopback fakes,
and a ``clock`` so availability dates are checked against a pinned day in tests.
No Dagster here.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, ClassVar, Sequence

# Methods named the same for every provider; each implementation maps them to its own
# (OpenAI "supervised" / "dpo" / "reinforcement"; Vertex SUPERVISED_FINE_TUNING / PREFERENCE_TUNING /
# REINFORCEMENT_TUNING; Bedrock FINE_TUNING / REINFORCEMENT_FINE_TUNING).
METHODS = ("supervised", "preference", "reinforcement")

# Normalized job states. "unknown" is a provider state this code does not know: it is logged and
# polled again, never treated as a failure (a provider adding a state must not fail our jobs).
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "unknown")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


# ----------------------------------------------------------------------------------------- errors
class PaidFineTuningError(Exception):
    """Base of every error of the paid fine-tuning layer."""


class ProviderRefused(PaidFineTuningError):
    """The provider will not run this (end of life, blocked organisation, 403, unknown model)."""

    def __init__(self, provider: str, model: str, reason: str):
        self.provider, self.model, self.reason = provider, model, reason
        super().__init__(f"{provider} refuses base model {model!r}: {reason}")


class DatasetFormatError(PaidFineTuningError):
    """A record breaks one of the provider's format rules; ``index`` is the record's 0-based position."""

    def __init__(self, provider: str, index: int, rule: str):
        self.provider, self.index, self.rule = provider, index, rule
        super().__init__(f"{provider} dataset, example {index}: {rule}")


class SpendCapExceeded(PaidFineTuningError):
    """The estimate is over the per-job cap or would take the cumulative spend over its cap."""

    def __init__(self, provider: str, model: str, estimate_usd: float, cap_usd: float, which: str):
        self.provider, self.model, self.estimate_usd, self.cap_usd, self.which = (
            provider, model, estimate_usd, cap_usd, which)
        super().__init__(f"{provider} {model}: estimated ${estimate_usd:.2f} is over the {which} "
                         f"cap of ${cap_usd:.2f}; nothing was submitted")


class JobFailed(PaidFineTuningError):
    """A job ended failed or cancelled; carries the provider's own error text."""

    def __init__(self, provider: str, job_id: str, error: str):
        self.provider, self.job_id, self.error = provider, job_id, error
        super().__init__(f"{provider} job {job_id} failed: {error}")


# ------------------------------------------------------------------------------------ dataclasses
@dataclass(frozen=True)
class ModelPrices:
    """Prices of one base model at one provider, from the dated table in prices.yaml (USD).
    Training is either per 1M tokens (times epochs) or per hour; hosting is per hour of a
    dedicated endpoint / provisioned throughput (0 when the tuned model is billed per token only)."""

    training_per_1m_tokens: float | None = None
    training_per_hour: float | None = None
    input_per_1k: float = 0.0
    output_per_1k: float = 0.0
    hosting_per_hour: float = 0.0
    source: str = ""
    as_of: str = ""


@dataclass(frozen=True)
class BaseModelInfo:
    """A base model a provider can tune: which methods, until when (None = no announced end)."""

    id: str
    methods: tuple[str, ...]
    available_until: date | None = None
    note: str = ""
    prices: ModelPrices | None = None


@dataclass(frozen=True)
class ChatExample:
    """One supervised example: the policy prompt and the verified expert answer."""

    prompt: str
    completion: str
    system: str = ""
    task_id: str = ""


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a verifier-preferred and a verifier-rejected completion."""

    prompt: str
    chosen: str
    rejected: str
    system: str = ""
    task_id: str = ""


@dataclass(frozen=True)
class ReinforcementItem:
    """A prompt plus the task row a grader needs to score a sampled answer."""

    prompt: str
    task: dict[str, Any]
    system: str = ""
    task_id: str = ""


@dataclass(frozen=True)
class DatasetSource:
    """Provider-neutral training data for one model type, built by ``paid.datasets``."""

    model_type: str
    sft: tuple[ChatExample, ...] = ()
    preference: tuple[PreferencePair, ...] = ()
    reinforcement: tuple[ReinforcementItem, ...] = ()

    def for_method(self, method: str) -> Sequence[ChatExample | PreferencePair | ReinforcementItem]:
        """The examples a method trains on; an empty set is an error naming what is missing."""
        by_method = {"supervised": self.sft, "preference": self.preference, "reinforcement": self.reinforcement}
        if method not in by_method:
            raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
        items = by_method[method]
        if not items:
            raise ValueError(f"{self.model_type}: no examples for method {method!r} "
                             f"(supervised needs verified trajectories, preference needs verifier-ranked samples)")
        return items


@dataclass(frozen=True)
class CostEstimate:
    """What a job should cost before it is submitted (training only; inference is priced per call)."""

    provider: str
    base_model: str
    method: str
    training_tokens: int          # approximate tokens in one pass over the dataset
    epochs: int
    usd: float
    detail: str                   # how it was computed, for the UI
    price_version: str


@dataclass(frozen=True)
class JobHandle:
    """A job at the provider. ``found_existing`` is True when create_job/find_job found a job that
    already carried the idempotency key instead of creating one."""

    provider: str
    job_id: str
    idempotency_key: str
    base_model: str
    method: str
    found_existing: bool = False


@dataclass(frozen=True)
class JobStatus:
    """One poll. ``state`` is one of JOB_STATES; ``provider_state`` the provider's own word."""

    provider: str
    job_id: str
    state: str
    provider_state: str
    error: str | None = None
    tuned_model: str | None = None       # what register() turns into a callable model
    trained_tokens: int | None = None    # billable tokens, when the provider reports them
    base_model: str | None = None

    def __post_init__(self) -> None:
        if self.state not in JOB_STATES:
            raise ValueError(f"JobStatus.state must be one of {JOB_STATES}, got {self.state!r}")

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class TunedModel:
    """A tuned model ready to call through ``generate``, with its running prices (USD)."""

    provider: str
    model_id: str                  # OpenAI ft:... id / Vertex endpoint / Bedrock deployment or PT arn
    base_model: str
    job_id: str
    input_per_1k_usd: float = 0.0
    output_per_1k_usd: float = 0.0
    hosting_per_hour_usd: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int
    latency_s: float


# ------------------------------------------------------------------------------------- contract
class PaidFineTuner(abc.ABC):
    """One hosted fine-tuning provider on its official SDK.

    Subclasses set ``name`` and take their SDK clients as keyword arguments (``None`` = build the
    SDK's default client, whose credentials come from the SDK's own environment lookup, on first
    use). ``clock`` returns today's date; availability is checked against it.
    """

    name: ClassVar[str]
    # Seconds one generate() call may take per prompt; paid.evaluation sets it from its config and
    # also enforces it from outside, so an implementation that cannot pass it to its SDK is still bounded.
    call_timeout_s: float = 60.0

    def __init__(self, *, clock: Callable[[], date] = date.today, **clients: Any):
        self.clock = clock
        self.clients = clients
        self._build_lock = threading.Lock()

    def _lazy(self, attr: str, build: Callable[[], Any]) -> Any:
        """``self.<attr>``, built by ``build()`` on first use, once. Under a lock because
        paid.evaluation calls ``generate`` from several threads: two racing builds would drop one
        client while a thread still uses it (google-genai closes its connections when a client is
        collected), and boto3's default session is not thread-safe."""
        if getattr(self, attr) is None:
            with self._build_lock:
                if getattr(self, attr) is None:
                    setattr(self, attr, build())
        return getattr(self, attr)

    # -- availability ------------------------------------------------------------------------
    @abc.abstractmethod
    def base_models(self) -> list[BaseModelInfo]:
        """Every base model this provider can tune, with methods, end dates and prices."""

    def model_info(self, base_model: str) -> BaseModelInfo:
        for info in self.base_models():
            if info.id == base_model:
                return info
        raise ProviderRefused(self.name, base_model, "not a tunable base model of this provider; known: "
                              + ", ".join(i.id for i in self.base_models()))

    def check_available(self, base_model: str, method: str) -> None:
        """Raise ProviderRefused (provider, model, why) unless a job could be submitted today."""
        info = self.model_info(base_model)
        if method not in info.methods:
            raise ProviderRefused(self.name, base_model, f"method {method!r} is not offered for this model "
                                  f"(offered: {', '.join(info.methods)})")
        today = self.clock()
        if info.available_until is not None and today > info.available_until:
            raise ProviderRefused(self.name, base_model, f"no new jobs after {info.available_until.isoformat()} "
                                  f"(today is {today.isoformat()}){': ' + info.note if info.note else ''}")

    # -- data ------------------------------------------------------------------------------
    # ``base_model`` is explicit (keyword-only, required) because a format can depend on it:
    # Bedrock's Nova, Llama and Claude families each read their own JSONL.
    @abc.abstractmethod
    def prepare_dataset(self, method: str, source: DatasetSource, *, base_model: str) -> list[dict]:
        """The provider's own JSONL records for ``method`` on ``base_model``."""

    @abc.abstractmethod
    def validate_dataset(self, method: str, records: list[dict], *, base_model: str) -> None:
        """Raise DatasetFormatError(provider, index, rule) on the first record breaking one of
        ``base_model``'s format rules."""

    @abc.abstractmethod
    def estimate_cost(self, base_model: str, method: str, records: list[dict],
                      hyperparameters: dict) -> CostEstimate:
        """Training cost before submitting, from the dated price table."""

    # -- job ------------------------------------------------------------------------------
    @abc.abstractmethod
    def upload(self, records: list[dict], name: str) -> str:
        """Upload the JSONL; returns what create_job takes (file id, gs:// or s3:// uri)."""

    @abc.abstractmethod
    def create_job(self, *, base_model: str, method: str, training_uri: str, hyperparameters: dict,
                   idempotency_key: str, suffix: str) -> JobHandle:
        """Submit, tagged with ``idempotency_key`` so ``find_job`` can find it after a crash."""

    @abc.abstractmethod
    def find_job(self, idempotency_key: str) -> JobHandle | None:
        """The job carrying ``idempotency_key`` (OpenAI metadata, Vertex labels, Bedrock token), if any."""

    @abc.abstractmethod
    def poll(self, job_id: str) -> JobStatus:
        """The job's state now; an unrecognised provider state maps to "unknown"."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None: ...

    @abc.abstractmethod
    def register(self, status: JobStatus) -> TunedModel:
        """Make a succeeded job's model callable (deploy when the provider needs it); its prices."""

    @abc.abstractmethod
    def generate(self, model_id: str, prompts: list[str], max_new_tokens: int,
                 temperature: float = 0.0) -> list[Generation]:
        """One completion per prompt, with usage and latency. Retries/timeouts are the caller's
        (``paid.evaluation``) or the SDK's; one call per prompt so failures stay per prompt."""

    # -- shared helpers ---------------------------------------------------------------------
    def prices(self, base_model: str) -> ModelPrices:
        info = self.model_info(base_model)
        if info.prices is None:
            raise LookupError(f"{self.name}: no price for {base_model!r} in srl_assets/paid/prices.yaml")
        return info.prices

    def _estimate_from_prices(self, base_model: str, method: str, records: list[dict],
                              hyperparameters: dict, default_epochs: int = 3) -> CostEstimate:
        """Tokens (≈ characters / 4 of the JSONL, see datasets.approx_tokens) × epochs × price per
        token, or, for per-hour methods, ``hyperparameters['max_hours']`` (default 1) × price per hour."""
        from srl_assets.paid import prices as price_table
        from srl_assets.paid.datasets import approx_tokens
        p = self.prices(base_model)
        tokens = approx_tokens(records)
        epochs = int(hyperparameters.get("n_epochs") or hyperparameters.get("epoch_count")
                     or hyperparameters.get("epochCount") or default_epochs)
        if p.training_per_1m_tokens is not None:
            usd = tokens * epochs * p.training_per_1m_tokens / 1e6
            detail = f"{tokens} tokens × {epochs} epochs × ${p.training_per_1m_tokens}/1M tokens"
        elif p.training_per_hour is not None:
            hours = float(hyperparameters.get("max_hours", 1.0))
            usd = hours * p.training_per_hour
            detail = f"{hours:g} h × ${p.training_per_hour}/h (set hyperparameters.max_hours to bound it)"
        else:
            raise LookupError(f"{self.name}: {base_model!r} has no training price in prices.yaml")
        return CostEstimate(self.name, base_model, method, tokens, epochs, round(usd, 6), detail,
                            price_table.version())
