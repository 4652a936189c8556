"""RulesIntegration: load, validate and version a model type's rules (YAML) and lore (Markdown).

Files ship with the package: ``srl_assets/domains/rules/<model_type>.yaml`` and
``<model_type>.md``. The version of a rules set is its declared semver plus a hash of both files'
content, so any edit changes the ``rules`` asset's data version and downstream assets go stale.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml

from srl_assets.domains import get_domain
from srl_assets.domains.base import LorePassage, Rules, RulesError, RulesValidator

RULES_DIR = Path(__file__).parent / "domains" / "rules"
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+$")
LORE_HEADING_RE = re.compile(r"^##\s+([a-z0-9_.-]+):\s*(.+?)\s*$")


def rules_paths(model_type: str, rules_dir: Path | str | None = None) -> tuple[Path, Path]:
    root = Path(rules_dir) if rules_dir else RULES_DIR
    return root / f"{model_type}.yaml", root / f"{model_type}.md"


def parse_lore(text: str, file: str, model_type: str) -> list[LorePassage]:
    """Sections start with ``## <model_type>.<id>: Title``; text before the first is ignored."""
    passages: list[LorePassage] = []
    current: tuple[str, str] | None = None
    body: list[str] = []

    def close() -> None:
        if current is None:
            return
        text_ = "\n".join(body).strip()
        if not text_:
            raise RulesError(file, current[0], "lore passage has no text")
        passages.append(LorePassage(current[0], current[1], text_))

    for line in text.splitlines():
        if line.startswith("## "):
            close()
            m = LORE_HEADING_RE.match(line)
            if not m:
                raise RulesError(file, line.strip(), "lore heading must read '## <rule.id>: Title'")
            rule_id = m.group(1)
            if not rule_id.startswith(f"{model_type}."):
                raise RulesError(file, rule_id, f"lore rule id must start with '{model_type}.'")
            if any(p.rule_id == rule_id for p in passages):
                raise RulesError(file, rule_id, "duplicate lore rule id")
            current, body = (rule_id, m.group(2)), []
        elif current is not None:
            body.append(line)
    close()
    if not passages:
        raise RulesError(file, "lore", "no '## <rule.id>: Title' passages found")
    return passages


class RulesIntegration:
    """Loads the validated ``Rules`` of a model type."""

    def __init__(self, rules_dir: Path | str | None = None):
        self.rules_dir = rules_dir

    def load(self, model_type: str) -> Rules:
        yaml_path, lore_path = rules_paths(model_type, self.rules_dir)
        return load_rules(model_type, yaml_path, lore_path)


def load_rules(model_type: str, yaml_path: Path, lore_path: Path) -> Rules:
    file = str(yaml_path)
    for path in (yaml_path, lore_path):
        if not path.is_file():
            raise RulesError(str(path), "file", "rules file not found")
    raw_yaml = yaml_path.read_bytes()
    raw_lore = lore_path.read_bytes()
    try:
        parsed = yaml.safe_load(raw_yaml)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        raise RulesError(file, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    v = RulesValidator(file, parsed)
    if not isinstance(parsed, dict):
        raise v.fail("(root)", f"must be a mapping, got {type(parsed).__name__}")
    v.string("model_type", choices=[model_type])
    semver = v.string("version")
    if not SEMVER_RE.match(semver):
        raise v.fail("version", f"{semver!r} is not a semantic version MAJOR.MINOR.PATCH")
    v.string("description")
    v.mapping("data")
    lore = parse_lore(raw_lore.decode("utf-8"), str(lore_path), model_type)
    domain = get_domain(model_type)
    domain.validate_rules(v)
    digest = hashlib.sha256(raw_yaml + b"\0" + raw_lore).hexdigest()
    return Rules(model_type=model_type, semver=semver, content_hash=digest, data=parsed["data"],
                 lore=lore, source=file)
