"""Evaluate a tuned hosted model on held-out tasks through its inference API.

Same verdicts as the local checkpoints (``performance.evaluation``): each task's output is read by
the Verifier and becomes an ``EvalRecord``, so a paid candidate lands in the same report tables.
Calls run in a bounded thread pool (``concurrency``); each call is retried with exponential backoff
and jitter on 429 / 5xx / timeouts / connection errors (tenacity) and bounded by a per-call timeout,
enforced both through the SDK (``call_timeout_s``) and from outside. Any other error is raised:
an API failure is never turned into a failed task (that would make an outage look like a bad model).
No Dagster here.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
from dataclasses import dataclass

import tenacity

from srl_assets.collaboration.verifier import Verifier
from srl_assets.dynamic_example_generator import Task
from srl_assets.paid.base import Generation, PaidFineTuner, TunedModel
from srl_assets.performance.performance_tracker import EvalRecord
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS, strip_think

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
RETRYABLE_NAMES = {"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
                   "ModelNotReadyException", "TooManyRequestsException", "APITimeoutError", "APIConnectionError",
                   "TimeoutException", "ConnectError", "ReadTimeout", "ConnectTimeout"}


@dataclass(frozen=True)
class PaidEvalConfig:
    concurrency: int = 4            # parallel calls; providers rate-limit per model, keep it small
    max_attempts: int = 5           # per call, including the first
    timeout_s: float = 60.0         # per call
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 20.0
    max_new_tokens: int = TRAJECTORY_MAX_NEW_TOKENS
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1 or self.timeout_s <= 0:
            raise ValueError(f"PaidEvalConfig: concurrency, max_attempts >= 1 and timeout_s > 0, got {self}")


@dataclass(frozen=True)
class PaidEvalResult:
    records: list[EvalRecord]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    mean_latency_s: float
    attempts: int                   # calls made, retries included

    @property
    def cost_per_1k_output_tokens(self) -> float:
        return 1000 * self.cost_usd / self.output_tokens if self.output_tokens else 0.0


def is_retryable(exc: BaseException) -> bool:
    """429 / 5xx / timeouts across the three SDKs (openai status_code, google-genai code, botocore
    ResponseMetadata), plus our own per-call timeout."""
    if isinstance(exc, (TimeoutError, cf.TimeoutError)):
        return True
    if type(exc).__name__ in RETRYABLE_NAMES:
        return True
    for attr in ("status_code", "code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and value in RETRYABLE_STATUS:
            return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        return status in RETRYABLE_STATUS or code in RETRYABLE_NAMES
    return False


def evaluate_paid(tuner: PaidFineTuner, tuned: TunedModel, candidate: str, tasks: list[Task], prompts: list[str],
                  verifier: Verifier, cfg: PaidEvalConfig = PaidEvalConfig()) -> PaidEvalResult:
    if len(tasks) != len(prompts):
        raise ValueError(f"{len(tasks)} tasks but {len(prompts)} prompts")
    tuner.call_timeout_s = cfg.timeout_s
    counter = itertools.count(1)   # next() is atomic under the GIL, unlike += on a shared int
    # One watchdog thread per in-flight call: a call past its timeout is abandoned (and retried),
    # so a provider that ignores the SDK timeout cannot stall the evaluation.
    watchdog = cf.ThreadPoolExecutor(max_workers=cfg.concurrency * 2, thread_name_prefix="paid-call")

    def one_call(prompt: str) -> Generation:
        next(counter)
        future = watchdog.submit(tuner.generate, tuned.model_id, [prompt], cfg.max_new_tokens, cfg.temperature)
        return future.result(timeout=cfg.timeout_s)[0]

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_retryable), stop=tenacity.stop_after_attempt(cfg.max_attempts),
        wait=tenacity.wait_exponential_jitter(initial=cfg.backoff_initial_s, max=cfg.backoff_max_s), reraise=True)

    def call(prompt: str) -> Generation:
        return retrying(one_call, prompt)

    try:
        with cf.ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="paid-eval") as pool:
            generations = list(pool.map(call, prompts))
    finally:
        watchdog.shutdown(wait=False, cancel_futures=True)
    records = []
    for task, gen in zip(tasks, generations, strict=True):
        verdict = verifier.verify_trajectory(task, strip_think(gen.text))
        records.append(EvalRecord(
            candidate=candidate, task_id=task.task_id, skills=task.skills, passed=verdict.passed,
            score=verdict.score, failed_skills=tuple(s for s in verdict.failed_skills if s in task.skills),
            format_ok=verdict.format_ok, output_tokens=gen.output_tokens, latency_s=gen.latency_s))
    inp = sum(g.input_tokens for g in generations)
    out = sum(g.output_tokens for g in generations)
    cost = inp / 1000 * tuned.input_per_1k_usd + out / 1000 * tuned.output_per_1k_usd
    latency = sum(g.latency_s for g in generations) / len(generations) if generations else 0.0
    return PaidEvalResult(records, inp, out, cost, latency, next(counter) - 1)
