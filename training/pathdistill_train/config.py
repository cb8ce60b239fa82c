"""OmegaConf configuration: default.yaml + experiment yaml + ``key=value`` overrides, in struct mode.

An experiment yaml may start with ``base: <experiment>`` (a bundled name, or a path relative to the yaml): the
base experiment (and its own base, and so on) is merged first, so a recipe that continues another lists only what
it changes. ``base`` is a directive of the loader, not a config key: the merged config has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from pathdistill_train.errors import TrainConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
# Free-form dict nodes: an experiment yaml that sets them replaces them whole (no key check inside).
FREE_FORM = ("teacher.model_kwargs", "student.model_kwargs")


def resolve_config_path(name: str | Path) -> Path:
    """A yaml path, or the name of a bundled config (``smoke_cpu`` / ``smoke_cpu.yaml``)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if cand.is_file():
            return cand
    raise TrainConfigError(
        f"config {name!s} not found (bundled: {sorted(x.stem for x in CONFIG_DIR.glob('*.yaml'))})"
    )


def load_config(config: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Merge default.yaml, an experiment yaml and dotlist overrides; unknown keys raise.

    Args:
        config: experiment yaml (path or bundled name), or None for the defaults alone.
        overrides: ``a.b=c`` strings.

    Returns:
        The merged config, read-only keys set fixed (struct mode).

    Raises:
        TrainConfigError: a key that default.yaml does not list, or a malformed override.
    """
    cfg: Any = OmegaConf.load(CONFIG_DIR / "default.yaml")
    OmegaConf.set_struct(cfg, True)
    _open_free_form(cfg)
    try:
        if config is not None:
            for exp in _experiment_chain(resolve_config_path(config)):
                cfg = _merge_experiment(cfg, exp)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise TrainConfigError(f"overrides must look like key=value, got {bad}")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        _check_types(OmegaConf.load(CONFIG_DIR / "default.yaml"), cfg, "")
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise TrainConfigError(
            f"unknown config key: {getattr(e, 'msg', e)!s} "
            f"(every valid key is listed in {CONFIG_DIR / 'default.yaml'})"
        ) from e
    except OmegaConfBaseException as e:
        raise TrainConfigError(f"invalid config value: {e}") from e
    return cfg


def _check_types(default: Any, cfg: Any, prefix: str) -> None:
    """Raise when a scalar's type differs from default.yaml's (ints are valid floats; null is free)."""
    for key, ref in default.items():
        if f"{prefix}{key}" in FREE_FORM:
            continue
        val = cfg[key]
        if isinstance(ref, DictConfig):
            _check_types(ref, val, f"{prefix}{key}.")
        elif ref is not None and val is not None and not isinstance(ref, (list, ListConfig)):
            ok = isinstance(val, type(ref)) or (isinstance(ref, float) and isinstance(val, int))
            if not ok or (isinstance(val, bool) and not isinstance(ref, bool)):
                raise TrainConfigError(
                    f"invalid config value {prefix}{key}={val!r}: expected {type(ref).__name__} (see default.yaml)"
                )


def _open_free_form(cfg: Any) -> None:
    for key in FREE_FORM:
        OmegaConf.set_struct(OmegaConf.select(cfg, key), False)


def _experiment_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[Any]:
    """The experiment at ``path`` preceded by its ``base:`` chain, oldest first (``base`` popped from each).

    Raises:
        TrainConfigError: a base that does not exist or is not a string, or a cycle.
    """
    path = path.resolve()
    if path in seen:
        raise TrainConfigError(f"config base cycle: {' -> '.join(p.name for p in (*seen, path))}")
    exp = OmegaConf.load(path)
    base = exp.pop("base", None) if isinstance(exp, DictConfig) else None
    if base is None:
        return [exp]
    if not isinstance(base, str):
        raise TrainConfigError(f"{path.name}: base must be a config name or path, got {base!r}")
    local = path.parent / base
    return [*_experiment_chain(local if local.is_file() else resolve_config_path(base), (*seen, path)), exp]


def _merge_experiment(cfg: Any, exp: Any) -> Any:
    """Merge an experiment yaml; its free-form nodes replace the defaults' instead of merging."""
    replaced = {k: OmegaConf.select(exp, k) for k in FREE_FORM if OmegaConf.select(exp, k) is not None}
    for key in replaced:
        parent, leaf = key.rsplit(".", 1)
        OmegaConf.select(exp, parent).pop(leaf)
    cfg = OmegaConf.merge(cfg, exp)
    for key, node in replaced.items():
        OmegaConf.update(cfg, key, node, merge=False, force_add=True)
    _open_free_form(cfg)
    return cfg


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the resolved config as yaml (atomically)."""
    from napari_pathdistill.atomic import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
