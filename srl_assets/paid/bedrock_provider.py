"""Model customization on Amazon Bedrock through ``boto3``: Amazon Nova, Meta Llama and, where an
account still has it, Anthropic's Claude 3 Haiku (the only fine-tunable Claude; the first-party
Anthropic SDK has no fine-tuning API).

Cycle: records → S3 → ``create_model_customization_job`` (job name derived from the idempotency
key, the key itself as ``clientRequestToken``) → ``get_model_customization_job`` → a way to call
the custom model → ``bedrock-runtime.converse``. A custom model cannot be called as is: Nova models
get an on-demand custom model deployment (billed per token), Llama and Claude a provisioned
throughput of one model unit, no commitment, billed **per hour while it exists**, created only
when allowed (SRL_BEDROCK_ALLOW_PROVISIONED=1) — ``release`` deletes it.

Each family has its own JSONL format (Bedrock user guide, "Prepare your training datasets"):
- Claude 3 Haiku: ``{"system": str, "messages": [{"role": "user"|"assistant", "content": str}]}``;
- Nova: ``{"schemaVersion": "bedrock-conversation-2024", "system": [{"text"}], "messages":
  [{"role", "content": [{"text"}]}]}``;
- Llama 3.1 (text): ``{"prompt": str, "completion": str}``.
Only supervised fine-tuning is offered: Bedrock's reinforcement fine-tuning (Nova only) grades
with an AWS Lambda in the customer's account, which this project does not deploy; Bedrock has no
preference tuning.

Configuration (keyword arguments, as ``resources.paid`` passes them, else the environment):
``role_arn`` (SRL_BEDROCK_ROLE_ARN, an IAM role Bedrock assumes to read and write the bucket),
``bucket`` (SRL_BEDROCK_BUCKET: a bucket name or ``s3://bucket/prefix``), ``region``
(SRL_BEDROCK_REGION, else boto3's AWS_REGION / profile), ``endpoint_url`` (Bedrock and S3) and
``runtime_endpoint_url`` (URL overrides, e.g. a local fake). Credentials come from boto3's own
lookup (AWS_* variables, profiles, instance roles) and are never read, logged or stored here. An
unknown keyword is an error.
No Dagster here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from srl_assets.paid import PROVIDERS
from srl_assets.paid import prices as price_table
from srl_assets.paid.base import (BaseModelInfo, ChatExample, CostEstimate, DatasetFormatError, DatasetSource,
                                  Generation, JobHandle, JobStatus, PaidFineTuner, PaidFineTuningError,
                                  ProviderRefused, TunedModel)
from srl_assets.paid.datasets import SYSTEM_PROMPT, check_alternating_chat, check_keys, check_size, to_jsonl

log = logging.getLogger(__name__)

NOVA_SCHEMA = "bedrock-conversation-2024"
_STATE = {"InProgress": "running", "Stopping": "running", "Completed": "succeeded", "Failed": "failed",
          "Stopped": "cancelled"}
_DEPLOY_READY = {"provisioned": "InService", "on_demand": "Active"}


@dataclass(frozen=True)
class _Family:
    name: str
    hyper: dict[str, tuple[float, float]]  # Bedrock hyperparameter → allowed [low, high]
    max_examples: int
    max_record_tokens: int
    serving: str  # "provisioned" (hourly) or "on_demand" (custom model deployment, per token)


# Ranges from the Bedrock user guide's "Custom model hyperparameters" pages (2026-12).
_FAMILIES = {
    "claude": _Family("claude", {"epochCount": (1, 10), "batchSize": (4, 256), "learningRateMultiplier": (0.1, 2.0),
                                 "earlyStoppingThreshold": (0, 0.1), "earlyStoppingPatience": (1, 10)},
                      max_examples=10_000, max_record_tokens=32_000, serving="provisioned"),
    "nova": _Family("nova", {"epochCount": (1, 5), "learningRate": (1e-6, 1e-4), "learningRateWarmupSteps": (0, 100),
                             "batchSize": (1, 256)},
                    max_examples=20_000, max_record_tokens=32_000, serving="on_demand"),
    "llama": _Family("llama", {"epochCount": (1, 10), "batchSize": (1, 1), "learningRate": (5e-6, 0.1),
                               "learningRateWarmupSteps": (0, 250)},
                     max_examples=10_000, max_record_tokens=16_000, serving="provisioned"),
}
# Our generic hyperparameter names → Bedrock's.
_ALIASES = {"n_epochs": "epochCount", "epoch_count": "epochCount", "batch_size": "batchSize",
            "learning_rate_multiplier": "learningRateMultiplier", "learning_rate": "learningRate",
            "warmup_steps": "learningRateWarmupSteps"}
_ESTIMATE_ONLY = {"max_hours"}

# (catalog id, Bedrock customization identifier, family, available_until, note)
_CATALOG = (
    ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0:200k", "claude",
     date(2026, 9, 9), "Claude 3 Haiku reached end of life on Bedrock on 2026-09-10 in most regions "
     "(ResourceNotFoundException: ... reached the end of its life); no other Claude model is fine-tunable"),
    ("amazon.nova-micro-v1:0", "amazon.nova-micro-v1:0:128k", "nova", None, ""),
    ("amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0:300k", "nova", None, ""),
    ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0:300k", "nova", None, ""),
    ("meta.llama3-1-8b-instruct-v1:0", "meta.llama3-1-8b-instruct-v1:0:128k", "llama", None, ""),
    ("meta.llama3-1-70b-instruct-v1:0", "meta.llama3-1-70b-instruct-v1:0:128k", "llama", None, ""),
)
_BY_ID = {c[0]: c for c in _CATALOG}
_BY_BEDROCK_ID = {c[1]: c for c in _CATALOG}


def job_name(idempotency_key: str) -> str:
    """The job's name is a function of the key alone, so ``find_job`` can look it up by name after
    a crash between the create call and our record of it."""
    return "srl-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def request_token(idempotency_key: str) -> str:
    """``clientRequestToken`` allows ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``, at most 256 characters."""
    token = re.sub(r"[^a-zA-Z0-9]+", "-", idempotency_key).strip("-")
    if not token or len(token) > 200:
        token = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return token


@PROVIDERS.register("bedrock")
class BedrockFineTuner(PaidFineTuner):
    name = "bedrock"

    def __init__(self, *, clock: Callable[[], date] = date.today, bedrock: Any = None, runtime: Any = None,
                 s3: Any = None, role_arn: str | None = None, bucket: str | None = None, region: str | None = None,
                 endpoint_url: str | None = None, runtime_endpoint_url: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, deploy_poll_s: float = 30.0,
                 deploy_timeout_s: float = 3600.0, allow_provisioned: bool | None = None,
                 system_prompt: str = SYSTEM_PROMPT, **unknown: Any):
        if unknown:  # a misspelt setting must not be dropped silently
            raise TypeError(f"bedrock: unknown settings {sorted(unknown)}; valid: bedrock, runtime, s3, role_arn, "
                            "bucket, region, endpoint_url, runtime_endpoint_url, sleep, deploy_poll_s, "
                            "deploy_timeout_s, allow_provisioned, system_prompt, clock")
        super().__init__(clock=clock, bedrock=bedrock, runtime=runtime, s3=s3)
        self._bedrock, self._runtime, self._s3 = bedrock, runtime, s3
        self.role_arn = role_arn or os.environ.get("SRL_BEDROCK_ROLE_ARN", "")
        self.bucket = (bucket or os.environ.get("SRL_BEDROCK_BUCKET") or "").rstrip("/")
        self.region = region or os.environ.get("SRL_BEDROCK_REGION") or None  # None: boto3's own lookup
        self.endpoint_url, self.runtime_endpoint_url = endpoint_url, runtime_endpoint_url
        self.system_prompt = system_prompt  # sent with every generate, as in the training data
        self.sleep, self.deploy_poll_s, self.deploy_timeout_s = sleep, deploy_poll_s, deploy_timeout_s
        # Provisioned throughput bills every hour it exists, outside any per-job spend cap: off
        # unless asked for (argument, else SRL_BEDROCK_ALLOW_PROVISIONED=1).
        self.allow_provisioned = (allow_provisioned if allow_provisioned is not None else
                                  os.environ.get("SRL_BEDROCK_ALLOW_PROVISIONED", "").lower() in ("1", "true", "yes"))

    # -- clients (boto3's own credential and region lookup) ------------------------------------
    @property
    def bedrock(self):
        import boto3
        return self._lazy("_bedrock", lambda: boto3.client("bedrock", region_name=self.region,
                                                           endpoint_url=self.endpoint_url))

    @property
    def runtime(self):
        def build():
            import boto3
            from botocore.config import Config

            # One attempt, bounded by call_timeout_s: paid.evaluation owns retries and backoff.
            return boto3.client("bedrock-runtime", region_name=self.region, endpoint_url=self.runtime_endpoint_url,
                                config=Config(read_timeout=self.call_timeout_s,
                                              connect_timeout=min(10.0, self.call_timeout_s),
                                              retries={"mode": "standard", "max_attempts": 1}))
        return self._lazy("_runtime", build)

    @property
    def s3(self):
        import boto3
        return self._lazy("_s3", lambda: boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint_url))

    # -- availability ----------------------------------------------------------------------------
    def base_models(self) -> list[BaseModelInfo]:
        return [BaseModelInfo(id=m, methods=("supervised",), available_until=until, note=note,
                              prices=price_table.model_prices(self.name, m) if price_table.has_prices(self.name, m)
                              else None)
                for m, _bid, _family, until, note in _CATALOG]

    def family(self, base_model: str) -> _Family:
        self.model_info(base_model)  # a refusal naming the known models
        return _FAMILIES[_BY_ID[base_model][2]]

    # -- data ------------------------------------------------------------------------------------
    def prepare_dataset(self, method: str, source: DatasetSource, *, base_model: str) -> list[dict]:
        """Records in the format of ``base_model``'s family. Bedrock only offers supervised fine-tuning here."""
        self._supervised_only(method, base_model)
        family = self.family(base_model).name
        return [_record(family, item) for item in source.for_method(method)]

    def validate_dataset(self, method: str, records: list[dict], *, base_model: str) -> None:
        """Checks against ``base_model``'s family: keys, alternation, non-empty text, size limits."""
        self._supervised_only(method, base_model)
        family = self.family(base_model)
        for i, record in enumerate(records):
            _CHECKS[family.name](self.name, i, record)
        check_size(self.name, records, min_examples=1, max_examples=family.max_examples,
                   max_record_tokens=family.max_record_tokens)

    def estimate_cost(self, base_model: str, method: str, records: list[dict],
                      hyperparameters: dict) -> CostEstimate:
        return self._estimate_from_prices(base_model, method, records, hyperparameters, default_epochs=2)

    def _supervised_only(self, method: str, base_model: str) -> None:
        if method != "supervised":
            raise ProviderRefused(self.name, base_model, f"method {method!r} is not offered: Bedrock has no "
                                  "preference tuning, and its reinforcement fine-tuning (Nova only) needs an AWS "
                                  "Lambda grader in your account, which this project does not deploy")

    # -- job -------------------------------------------------------------------------------------
    def upload(self, records: list[dict], name: str) -> str:
        bucket, prefix = self._bucket_prefix()
        key = f"{prefix}/{name}.jsonl"
        self.s3.put_object(Bucket=bucket, Key=key, Body=to_jsonl(records), ContentType="application/jsonl")
        uri = f"s3://{bucket}/{key}"
        log.info("bedrock: uploaded %d records to %s", len(records), uri)
        return uri

    def _bucket_prefix(self) -> tuple[str, str]:
        if not self.bucket:
            raise ValueError("bedrock: needs an S3 bucket for data and outputs (SRL_BEDROCK_BUCKET or bucket=)")
        bucket, _, prefix = self.bucket.removeprefix("s3://").partition("/")
        return bucket, prefix or "srl-paid"

    def create_job(self, *, base_model: str, method: str, training_uri: str, hyperparameters: dict,
                   idempotency_key: str, suffix: str) -> JobHandle:
        from botocore.exceptions import ClientError

        self.check_available(base_model, method)
        if not self.role_arn:
            raise ValueError("bedrock: needs the IAM role Bedrock assumes (SRL_BEDROCK_ROLE_ARN or role_arn=)")
        existing = self.find_job(idempotency_key)
        if existing is not None:
            log.info("bedrock: job %s already carries key %s; not creating another", existing.job_id, idempotency_key)
            return existing
        name = job_name(idempotency_key)
        bucket, prefix = self._bucket_prefix()
        custom_name = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{suffix}-{name}").strip("-")[:63]
        try:
            response = self.bedrock.create_model_customization_job(
                jobName=name, customModelName=custom_name, roleArn=self.role_arn,
                baseModelIdentifier=_BY_ID[base_model][1], customizationType="FINE_TUNING",
                trainingDataConfig={"s3Uri": training_uri},
                outputDataConfig={"s3Uri": f"s3://{bucket}/{prefix}/output/{name}/"},
                hyperParameters=self._hyper(base_model, hyperparameters),
                clientRequestToken=request_token(idempotency_key),
                jobTags=[{"key": "srl-idempotency-key", "value": request_token(idempotency_key)[:256]}])
        except ClientError as error:
            code, message = error.response["Error"].get("Code", ""), error.response["Error"].get("Message", "")
            if code in ("ResourceInUseException", "ConflictException"):
                # Another attempt created it between our lookup and our create: that job is ours.
                found = self.find_job(idempotency_key)
                if found is not None:
                    return found
            if code in ("AccessDeniedException", "ResourceNotFoundException") or "end of its life" in message:
                raise ProviderRefused(self.name, base_model, f"{code}: {message}") from error
            raise
        log.info("bedrock: created customization job %s (%s)", response["jobArn"], base_model)
        return JobHandle(self.name, response["jobArn"], idempotency_key, base_model, method)

    def _hyper(self, base_model: str, hyperparameters: dict) -> dict[str, str]:
        """Bedrock's hyperparameters, as strings, checked against the family's ranges."""
        family = self.family(base_model)
        out = {}
        for key, value in hyperparameters.items():
            if value is None or key in _ESTIMATE_ONLY:
                continue
            name = _ALIASES.get(key, key)
            if name not in family.hyper:
                raise ValueError(f"bedrock: hyperparameter {key!r} does not apply to {base_model} "
                                 f"({family.name}); valid: {sorted(family.hyper)}")
            low, high = family.hyper[name]
            if not low <= float(value) <= high:
                raise ValueError(f"bedrock: {name}={value!r} is outside [{low:g}, {high:g}] for {base_model}")
            out[name] = str(value)
        return out

    def find_job(self, idempotency_key: str) -> JobHandle | None:
        from botocore.exceptions import ClientError

        try:
            job = self.bedrock.get_model_customization_job(jobIdentifier=job_name(idempotency_key))
        except ClientError as error:
            if error.response["Error"].get("Code") == "ResourceNotFoundException":
                return None
            raise
        token = job.get("clientRequestToken")
        if token is not None and token != request_token(idempotency_key):
            raise PaidFineTuningError(f"bedrock: job {job['jobName']} exists with another request token; "
                                      "refusing to treat it as ours")
        return JobHandle(self.name, job["jobArn"], idempotency_key, _catalog_id(job.get("baseModelArn", "")),
                         "supervised", found_existing=True)

    def poll(self, job_id: str) -> JobStatus:
        job = self.bedrock.get_model_customization_job(jobIdentifier=job_id)
        provider_state = job.get("status", "")
        state = _STATE.get(provider_state, "unknown")
        if state == "unknown":
            log.warning("bedrock: job %s is in state %r, which this code does not know; polling again",
                        job_id, provider_state)
        error = (job.get("failureMessage") or f"job ended {provider_state} without a failure message") \
            if state == "failed" else None
        # Bedrock reports no billable token count for a customization job (it shows in billing only).
        return JobStatus(self.name, job_id, state, provider_state, error=error,
                         tuned_model=job.get("outputModelArn") if state == "succeeded" else None,
                         trained_tokens=None, base_model=_catalog_id(job.get("baseModelArn", "")))

    def cancel(self, job_id: str) -> None:
        self.bedrock.stop_model_customization_job(jobIdentifier=job_id)
        log.info("bedrock: stop requested for %s", job_id)

    def register(self, status: JobStatus) -> TunedModel:
        """Make the custom model callable: an on-demand deployment (Nova) or one unit of provisioned
        throughput (Llama, Claude; billed per hour until ``release``). Reuses one made earlier for
        the same job, then waits until it is ready."""
        from botocore.exceptions import ClientError

        if status.state != "succeeded" or not status.tuned_model:
            raise PaidFineTuningError(f"bedrock: job {status.job_id} is {status.state} ({status.provider_state}), "
                                      "not succeeded with a custom model; nothing to register")
        base = status.base_model or ""
        family = self.family(base)
        prices = self.prices(base)
        name = "srl-" + hashlib.sha256(status.job_id.encode()).hexdigest()[:24]
        token = request_token(status.job_id)
        if family.serving == "provisioned":
            getter, id_key = self.bedrock.get_provisioned_model_throughput, "provisionedModelId"
        else:
            getter, id_key = self.bedrock.get_custom_model_deployment, "customModelDeploymentIdentifier"
        try:
            arn = _deployment_arn(getter(**{id_key: name}))
        except ClientError as error:
            if error.response["Error"].get("Code") != "ResourceNotFoundException":
                raise
            if family.serving == "provisioned":
                if not self.allow_provisioned:
                    raise PaidFineTuningError(
                        f"bedrock: calling {base} custom models needs provisioned throughput, billed "
                        f"${prices.hosting_per_hour:.2f}/h until released; set SRL_BEDROCK_ALLOW_PROVISIONED=1 "
                        "(or allow_provisioned=True) to create it")
                arn = self.bedrock.create_provisioned_model_throughput(
                    modelUnits=1, provisionedModelName=name, modelId=status.tuned_model,
                    clientRequestToken=token)["provisionedModelArn"]
            else:
                arn = self.bedrock.create_custom_model_deployment(
                    modelDeploymentName=name, modelArn=status.tuned_model,
                    clientRequestToken=token)["customModelDeploymentArn"]
            log.info("bedrock: created %s %s for %s", family.serving, arn, status.tuned_model)
        self._wait_ready(getter, id_key, arn, _DEPLOY_READY[family.serving])
        return TunedModel(self.name, arn, base, status.job_id, input_per_1k_usd=prices.input_per_1k,
                          output_per_1k_usd=prices.output_per_1k,
                          hosting_per_hour_usd=prices.hosting_per_hour if family.serving == "provisioned" else 0.0,
                          extra={"custom_model_arn": status.tuned_model, "serving": family.serving})

    def _wait_ready(self, getter: Callable, id_key: str, arn: str, ready: str) -> None:
        waited = 0.0
        while True:
            described = getter(**{id_key: arn})
            state = described.get("status")
            if state == ready:
                return
            if state == "Failed":
                raise PaidFineTuningError(f"bedrock: {arn} failed: {described.get('failureMessage') or 'no message'}")
            if waited >= self.deploy_timeout_s:
                raise TimeoutError(f"bedrock: {arn} still {state} after {waited:.0f}s")
            self.sleep(self.deploy_poll_s)
            waited += self.deploy_poll_s

    def release(self, model: TunedModel) -> None:
        """Delete the provisioned throughput or deployment, which stops its hourly billing."""
        if model.extra.get("serving") == "provisioned":
            self.bedrock.delete_provisioned_model_throughput(provisionedModelId=model.model_id)
        else:
            self.bedrock.delete_custom_model_deployment(customModelDeploymentIdentifier=model.model_id)
        log.info("bedrock: released %s", model.model_id)

    def generate(self, model_id: str, prompts: list[str], max_new_tokens: int,
                 temperature: float = 0.0) -> list[Generation]:
        out = []
        for prompt in prompts:
            started = time.monotonic()
            system = {"system": [{"text": self.system_prompt}]} if self.system_prompt else {}
            response = self.runtime.converse(modelId=model_id,
                                             messages=[{"role": "user", "content": [{"text": prompt}]}],
                                             inferenceConfig={"maxTokens": max_new_tokens, "temperature": temperature},
                                             **system)
            content = response["output"]["message"]["content"]
            usage = response.get("usage", {})
            out.append(Generation(text="".join(c.get("text", "") for c in content),
                                  input_tokens=int(usage.get("inputTokens", 0)),
                                  output_tokens=int(usage.get("outputTokens", 0)),
                                  latency_s=time.monotonic() - started))
        return out


# ------------------------------------------------------------------------------------ records
def _record(family: str, item: ChatExample) -> dict:
    if family == "claude":
        record: dict[str, Any] = {"system": item.system} if item.system else {}
        record["messages"] = [{"role": "user", "content": item.prompt},
                              {"role": "assistant", "content": item.completion}]
        return record
    if family == "nova":
        record = {"schemaVersion": NOVA_SCHEMA}
        if item.system:
            record["system"] = [{"text": item.system}]
        record["messages"] = [{"role": "user", "content": [{"text": item.prompt}]},
                              {"role": "assistant", "content": [{"text": item.completion}]}]
        return record
    # Llama 3.1 text models take prompt/completion pairs; the system prompt leads the prompt.
    prompt = f"{item.system}\n\n{item.prompt}" if item.system else item.prompt
    return {"prompt": prompt, "completion": item.completion}


def _check_claude(provider: str, i: int, record: Any) -> None:
    check_keys(provider, i, record, {"messages"}, {"system", "messages"})
    if "system" in record and not isinstance(record["system"], str):
        raise DatasetFormatError(provider, i, "system must be a string")
    messages = record["messages"]
    check_alternating_chat(provider, i, messages, system_role=None)
    for j, m in enumerate(messages):
        if not isinstance(m["content"], str):
            raise DatasetFormatError(provider, i, f"message {j} content must be a string for Claude")


def _check_nova(provider: str, i: int, record: Any) -> None:
    check_keys(provider, i, record, {"schemaVersion", "messages"}, {"schemaVersion", "system", "messages"})
    if record["schemaVersion"] != NOVA_SCHEMA:
        raise DatasetFormatError(provider, i, f"schemaVersion must be {NOVA_SCHEMA!r}, got {record['schemaVersion']!r}")
    if "system" in record:
        _check_text_blocks(provider, i, record["system"], "system")
    check_alternating_chat(provider, i, record["messages"], system_role=None)
    for j, m in enumerate(record["messages"]):
        _check_text_blocks(provider, i, m["content"], f"message {j} content")


def _check_text_blocks(provider: str, i: int, blocks: Any, where: str) -> None:
    if not isinstance(blocks, list) or not blocks:
        raise DatasetFormatError(provider, i, f"{where} must be a non-empty list of {{'text': ...}} blocks")
    for k, block in enumerate(blocks):
        if not isinstance(block, dict) or set(block) != {"text"} or not isinstance(block["text"], str) \
                or not block["text"].strip():
            raise DatasetFormatError(provider, i, f"{where} block {k} must be {{'text': <non-empty string>}}")


def _check_llama(provider: str, i: int, record: Any) -> None:
    check_keys(provider, i, record, {"prompt", "completion"}, {"prompt", "completion"})
    for key in ("prompt", "completion"):
        if not isinstance(record[key], str) or not record[key].strip():
            raise DatasetFormatError(provider, i, f"{key} must be a non-empty string")


_CHECKS = {"claude": _check_claude, "nova": _check_nova, "llama": _check_llama}


def _catalog_id(base_model_arn: str) -> str:
    """The catalog id of ``arn:...:foundation-model/<bedrock id>`` (or of the bare id)."""
    bedrock_id = base_model_arn.rsplit("/", 1)[-1]
    if bedrock_id in _BY_BEDROCK_ID:
        return _BY_BEDROCK_ID[bedrock_id][0]
    return re.sub(r":\d+k$", "", bedrock_id)


def _deployment_arn(described: dict) -> str:
    return described.get("provisionedModelArn") or described["customModelDeploymentArn"]
