"""KLController: fixed and adaptive (Ziegler et al., 2019) on known numbers."""

import doctest

import pytest

import srl_assets.kl_controller as kl_controller
from srl_assets.kl_controller import (
    FixedKLController,
    kl_controller_names,
    make_kl_controller,
    register_kl_controller,
)

# (case, current_kl, n_steps, expected coef after one update) with init 0.1, target 6, horizon 1e4
ADAPTIVE = [
    # 12/6 - 1 = 1, clipped to +0.2
    ("above target, clipped up", 12.0, 256, 0.1 * (1 + 0.2 * 256 / 10_000)),
    # 0/6 - 1 = -1, clipped to -0.2
    ("below target, clipped down", 0.0, 256, 0.1 * (1 - 0.2 * 256 / 10_000)),
    # 6.6/6 - 1 = 0.1, inside the clip
    ("slightly above, not clipped", 6.6, 100, 0.1 * (1 + 0.1 * 100 / 10_000)),
    # 5.4/6 - 1 = -0.1, inside the clip
    ("slightly below, not clipped", 5.4, 100, 0.1 * (1 - 0.1 * 100 / 10_000)),
    ("on target", 6.0, 256, 0.1),
    ("no samples", 12.0, 0, 0.1),
]


@pytest.mark.parametrize("case,kl,n,expected", ADAPTIVE)
def test_adaptive_update(case, kl, n, expected):
    controller = make_kl_controller("adaptive", init_coef=0.1, target=6.0, horizon=10_000)
    controller.update(kl, n)
    assert controller.value == pytest.approx(expected, rel=1e-12), case


def test_adaptive_compounds_over_steps():
    controller = make_kl_controller("adaptive", init_coef=0.1, target=6.0, horizon=10_000)
    for _ in range(3):
        controller.update(12.0, 256)
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000) ** 3)


def test_fixed_never_changes():
    controller = make_kl_controller("fixed", init_coef=0.05, target=6.0, horizon=10)
    for kl in [0.0, 6.0, 1e6]:
        controller.update(kl, 256)
        assert controller.value == 0.05
    assert make_kl_controller("fixed", init_coef=0.0).value == 0.0  # the SRL paper's setting


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("adaptive", {"init_coef": 0.1, "horizon": 100}, "target > 0"),
        ("adaptive", {"init_coef": 0.1, "target": 0.0, "horizon": 100}, "target > 0"),
        ("adaptive", {"init_coef": 0.1, "target": 6.0}, "horizon > 0"),
        ("adaptive", {"init_coef": 0.1, "target": 6.0, "horizon": -1}, "horizon > 0"),
        ("adaptive", {"init_coef": 0.0, "target": 6.0, "horizon": 100}, "init_coef > 0"),
        ("fixed", {"init_coef": -0.1}, "init_coef"),
        ("bogus", {"init_coef": 0.1}, r"valid names: \['adaptive', 'fixed'\]"),
    ],
)
def test_validation(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_kl_controller(name, **kwargs)


@pytest.mark.parametrize(
    "kl,n,message", [(float("nan"), 1, "current_kl"), (1.0, -1, "n_steps"), (12.0, 600, "negative")]
)
def test_bad_updates(kl, n, message):
    # n_steps 600 with horizon 100: factor 1 - 0.2 * 6 < 0 would flip the coefficient's sign.
    controller = make_kl_controller("adaptive", init_coef=0.1, target=24.0, horizon=100)
    with pytest.raises(ValueError, match=message):
        controller.update(kl, n)


def test_registry():
    assert kl_controller_names() == ["adaptive", "fixed"]
    with pytest.raises(ValueError, match="already registered"):
        register_kl_controller("fixed")(FixedKLController)


def test_doctests():
    assert doctest.testmod(kl_controller).failed == 0


def test_state_dict_round_trip_restores_the_adapted_value():
    adapted = make_kl_controller("adaptive", init_coef=0.1, target=6.0, horizon=10_000)
    adapted.update(12.0, 256)
    fresh = make_kl_controller("adaptive", init_coef=0.1, target=6.0, horizon=10_000)
    fresh.load_state_dict(adapted.state_dict())
    assert fresh.value == adapted.value != 0.1
    fresh.update(12.0, 256)  # and it keeps adapting from there
    assert fresh.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000) ** 2)


@pytest.mark.parametrize(
    "name,state,message",
    [
        ("adaptive", {"controller": "FixedKLController", "value": 0.1}, "saved by FixedKLController"),
        ("adaptive", {}, "no 'value'"),
        ("adaptive", {"value": 0.0}, "> 0"),  # the multiplicative update would stay at 0
        ("fixed", {"value": float("nan")}, ">= 0"),
        ("fixed", {"value": -1.0}, ">= 0"),
    ],
)
def test_load_state_dict_validation(name, state, message):
    controller = make_kl_controller(name, init_coef=0.1, target=6.0, horizon=100)
    with pytest.raises(ValueError, match=message):
        controller.load_state_dict(state)
    assert controller.value == 0.1
