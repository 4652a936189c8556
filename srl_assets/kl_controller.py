"""KLController: the coefficient of the KL penalty against the reference model, one per name.

- "fixed":    the coefficient never changes (the SRL paper trains with a fixed coefficient of 0).
- "adaptive": Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", as in
              the original PPO RLHF code: steer the measured KL towards a target,
                  error = clip(current_kl / target - 1, -0.2, 0.2)
                  coef <- coef * (1 + error * n_steps / horizon)
              The clip bounds how fast the coefficient moves; `horizon` (in samples) sets the
              time scale over which it adapts.

>>> c = make_kl_controller("adaptive", init_coef=0.1, target=6.0, horizon=10_000)
>>> c.update(current_kl=12.0, n_steps=256)  # error clipped to +0.2
>>> round(c.value, 8)
0.100512

`state_dict()` / `load_state_dict()` carry the coefficient through a checkpoint, so a resumed run
continues from the adapted value instead of the initial one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from srl_assets.registry import Registry

ERROR_CLIP = 0.2

_REGISTRY: Registry[type[KLController]] = Registry("KL controller")
register_kl_controller = _REGISTRY.register


def kl_controller_names() -> list[str]:
    """The registered controller names, sorted."""
    return _REGISTRY.names()


def make_kl_controller(
    name: str, init_coef: float, target: float | None = None, horizon: float | None = None
) -> KLController:
    """Build the controller registered as `name`.

    Every controller accepts `target` and `horizon` so one training config can switch controllers
    by name alone; "fixed" ignores them.
    """
    return _REGISTRY.get(name)(init_coef=init_coef, target=target, horizon=horizon)


class KLController(ABC):
    """Holds the current KL coefficient (`value`) and updates it after each training step."""

    needs_positive_value = False  # True where a coefficient of 0 is not a valid state

    def __init__(
        self, init_coef: float, target: float | None = None, horizon: float | None = None
    ) -> None:
        if not (math.isfinite(init_coef) and init_coef >= 0):
            raise ValueError(f"init_coef must be a finite number >= 0, got {init_coef}")
        self.value = float(init_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Record the KL measured over the last step's `n_steps` samples; may change `value`."""
        if not math.isfinite(current_kl):
            raise ValueError(f"current_kl must be finite, got {current_kl}")
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        self._update(float(current_kl), n_steps)

    def state_dict(self) -> dict[str, Any]:
        """What training changes, JSON-able: the controller's class and its current coefficient."""
        return {"controller": type(self).__name__, "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `value` from `state_dict()`'s output (e.g. read back from a checkpoint)."""
        saved_by = state.get("controller")
        if saved_by is not None and saved_by != type(self).__name__:
            raise ValueError(f"KL controller state was saved by {saved_by}, cannot load it into "
                             f"{type(self).__name__}")
        if "value" not in state:
            raise ValueError(f"KL controller state has no 'value': {dict(state)}")
        value = state["value"]
        bound = "> 0" if self.needs_positive_value else ">= 0"
        if not (isinstance(value, (int, float)) and math.isfinite(value)
                and (value > 0 or (value == 0 and not self.needs_positive_value))):
            raise ValueError(
                f"KL controller state 'value' must be a finite number {bound}, got {value!r}"
            )
        self.value = float(value)

    @abstractmethod
    def _update(self, current_kl: float, n_steps: int) -> None: ...


@register_kl_controller("fixed")
class FixedKLController(KLController):
    """A constant coefficient."""

    def _update(self, current_kl: float, n_steps: int) -> None:
        pass


@register_kl_controller("adaptive")
class AdaptiveKLController(KLController):
    """Ziegler et al. (2019): multiply the coefficient up when KL is above target, down below."""

    needs_positive_value = True

    def __init__(
        self, init_coef: float, target: float | None = None, horizon: float | None = None
    ) -> None:
        super().__init__(init_coef)
        if init_coef <= 0:
            # The update is multiplicative: a coefficient of 0 would stay 0 forever.
            raise ValueError(f"adaptive KL controller needs init_coef > 0, got {init_coef}")
        if target is None or not (math.isfinite(target) and target > 0):
            raise ValueError(f"adaptive KL controller needs target > 0, got {target}")
        if horizon is None or not (math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"adaptive KL controller needs horizon > 0, got {horizon}")
        self.target = float(target)
        self.horizon = float(horizon)

    def _update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -ERROR_CLIP), ERROR_CLIP)
        factor = 1.0 + error * n_steps / self.horizon
        if factor <= 0:
            # Only when n_steps > horizon / 0.2: a horizon far too short for the batch size.
            raise ValueError(
                f"n_steps / horizon = {n_steps} / {self.horizon} is too large: the KL coefficient "
                "would turn negative; use a horizon of at least 5 * n_steps"
            )
        self.value *= factor
