"""default.yaml and the trainer's code name the same keys: every key default.yaml lists is read somewhere in
``pathdistill_train`` (no dead setting a user tunes to no effect), and every ``cfg.<section>.<key>`` the code reads
is listed there (struct mode would raise on it only once that code path runs, e.g. on a GPU or in XMAG mode).

A static check of the source text: a key counts as read where its name appears as an attribute (``.key``) or a
string (``"key"``) outside config.py (which only validates).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import pathdistill_train
from pathdistill_train.config import CONFIG_DIR, FREE_FORM

PACKAGE = Path(pathdistill_train.__file__).parent
#: a local name given to a section: ``lc = cfg.loss``, ``o, ep = cfg.optim, ...``
ALIAS = re.compile(r"^\s*(\w+)(?:, \w+)* = (?:self\.)?cfg\.([a-z_]+)(?:,|\s*$)", re.MULTILINE)


def _keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in FREE_FORM:
            out += _keys(value, f"{path}.")
        else:
            out.append(path)
    return out


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "config.py"}


def _default() -> dict[str, Any]:
    tree = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "default.yaml"))
    assert isinstance(tree, dict)
    return tree  # type: ignore[return-value]


def test_every_default_key_is_read_by_the_trainer() -> None:
    text = "\n".join(_sources().values())
    unread = [
        key
        for key in _keys(_default())
        if not re.search(rf"\.{key.rsplit('.', 1)[-1]}\b|[\"']{key.rsplit('.', 1)[-1]}[\"']", text)
    ]
    assert not unread, f"keys of default.yaml that no code reads: {unread}"


def test_every_key_the_trainer_reads_is_in_default_yaml() -> None:
    default = _default()
    listed = set(_keys(default))
    missing = []
    for path, text in _sources().items():
        text = text.replace("self.cfg.", "cfg.")
        aliases = {
            name: section for name, section in ALIAS.findall(text) if isinstance(default.get(section), dict)
        }
        names = "|".join(["cfg", *aliases])
        for m in re.finditer(rf"(?<![\w.])({names})\.(\w+)(?:\.(\w+))?", text):
            base, first, second = m.groups()
            if base == "cfg" and isinstance(default.get(first), dict) and second not in (None, "get"):
                key = f"{first}.{second}"
            elif base in aliases:
                key = f"{aliases[base]}.{first}"
            else:
                continue
            if key not in listed and not any(key.startswith(f"{f}.") for f in FREE_FORM):
                missing.append(f"{path.relative_to(PACKAGE)}: {m.group(0)}")
    assert not missing, f"keys read but not in default.yaml: {missing}"
