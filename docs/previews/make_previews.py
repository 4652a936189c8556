"""Write the README's preview images: one teacher spec per model type, rendered.

    .venv/bin/python docs/previews/make_previews.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from srl_assets.domains import MODEL_TYPES, get_domain  # noqa: E402
from srl_assets.previews import render  # noqa: E402
from srl_assets.rules_integration import RulesIntegration  # noqa: E402

# Tasks chosen to show each preview at its most telling (any task renders).
PARAMS = {
    "personality": {"emotion": "joy", "intensity": "high", "ask_action": True,
                    "traits": {"extraversion": "high", "neuroticism": "low"}, "faction": None},
    "facial": {"emotion": "happiness", "intensity": "D", "ask_body": True},
    "building": {"function": "temple", "floors": 2, "culture": "japanese", "biome": "coast", "extra": "shrine"},
    "animal": None,
    "plant": None,
    "tree": {"species": "sugar_maple", "season": "autumn", "ask_angle": True, "ask_lsystem": True},
    "sound": {"kind": "ambience", "biome": "forest", "time": "night", "ask_gain": True, "weather": "rain"},
}


def main() -> None:
    from srl_assets.dynamic_example_generator import DynamicExampleGenerator

    for model_type in MODEL_TYPES:
        domain, rules = get_domain(model_type), RulesIntegration().load(model_type)
        params = PARAMS.get(model_type)
        if params is not None:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            spec = domain.plan(params, rules).spec if params else None
        except (KeyError, ValueError, IndexError):  # the rules changed: fall back to a drawn task
            spec = None
        if spec is None:
            task = DynamicExampleGenerator(domain, rules).generate(1, "eval", seed=1)[0]
            spec = domain.plan(task.params, rules).spec
        rendering = render(model_type, spec)
        path = HERE / f"{model_type}.png"
        path.write_bytes(rendering.png)
        print(f"{path.relative_to(HERE.parents[1])}: {len(rendering.png) // 1024} KB")


if __name__ == "__main__":
    main()
