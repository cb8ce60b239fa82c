"""OmegaConf configuration: default.yaml + experiment yaml + ``key=value`` overrides, in struct mode.

An experiment yaml may start with ``base: <experiment>`` (a bundled name, or a path relative to the yaml): the
base experiment (and its own base, and so on) is merged first, so a recipe that continues another lists only what
it changes. ``base`` is a directive of the loader, not a config key: the merged config has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from pathdistill_train.errors import TrainConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
# Free-form dict nodes: an experiment yaml that sets them replaces them whole (no key check inside).
FREE_FORM = ("teacher.model_kwargs", "student.model_kwargs")
# Keys with a fixed set of values (default.yaml lists what each means).
ENUMS: dict[str, tuple[str, ...]] = {
    "teacher.heads": ("load", "frozen_random", "learn"),
    "student.embedding": ("cls", "cls+mean"),
    "loss.mode": ("dino_ibot", "feature", "both"),
    "loss.centering": ("centering", "sinkhorn_knopp"),
    "loss.pairing": ("cross", "same"),
    "data.pipeline": ("loader", "device"),
    "optim.scaling_rule": ("sqrt_wrt_1024", "linear_wrt_256", "none"),
    "train.device": ("auto", "cuda", "cpu"),
    "train.amp": ("bf16", "none"),
    "distributed.backend": ("auto", "nccl", "gloo"),
}
_INF = float("inf")
_POSITIVE, _COUNT, _FRACTION = (1e-300, _INF, "> 0"), (1, _INF, ">= 1"), (0.0, 1.0, "in [0, 1]")
# Numeric keys with bounds: (lowest, highest, how the error states it); null values are not checked here.
RANGES: dict[str, tuple[float, float, str]] = {
    **dict.fromkeys(("heads.dino_out_dim", "heads.ibot_out_dim", "heads.hidden_dim"), _COUNT),
    **dict.fromkeys(("heads.dino_bottleneck_dim", "heads.ibot_bottleneck_dim", "heads.nlayers"), _COUNT),
    **dict.fromkeys(("loss.student_temp", "loss.teacher_temp", "loss.warmup_teacher_temp"), _POSITIVE),
    **dict.fromkeys(("loss.relational_teacher_temp", "loss.relational_student_temp"), _POSITIVE),
    "loss.center_momentum": _FRACTION,
    "loss.warmup_teacher_temp_epochs": (0.0, _INF, ">= 0"),
    "crops.global_size": _COUNT,
    "augmentation.local_crops_number": (0, _INF, ">= 0"),
    "augmentation.local_crops_size": _COUNT,
    **dict.fromkeys(
        ("augmentation.color_jitter_p", "augmentation.grayscale_p", "augmentation.hed_p"), _FRACTION
    ),
    "augmentation.student_p": _FRACTION,
    "data.mpp": _POSITIVE,
    "data.min_tissue": _FRACTION,
    "data.source_scale": _POSITIVE,
    "crossmag.factor": _COUNT,
    **dict.fromkeys(("optim.epochs", "optim.epoch_length"), _COUNT),
    "optim.base_lr": _POSITIVE,
    **dict.fromkeys(
        ("optim.min_lr", "optim.warmup_epochs", "optim.freeze_last_layer_epochs"), (0.0, _INF, ">= 0")
    ),
    **dict.fromkeys(("optim.weight_decay", "optim.weight_decay_end"), (0.0, _INF, ">= 0")),
    **dict.fromkeys(("optim.layerwise_decay", "optim.patch_embed_lr_mult"), (0.0, _INF, ">= 0")),
    **dict.fromkeys(("optim.adamw_beta1", "optim.adamw_beta2"), (0.0, 0.999999, "in [0, 1)")),
    **dict.fromkeys(("ema.momentum", "ema.final_momentum"), _FRACTION),
    "train.batch_size_per_gpu": _COUNT,
    "train.num_workers": (0, _INF, ">= 0"),
    **dict.fromkeys(("train.checkpoint_every", "train.log_every"), _COUNT),
}


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
        TrainConfigError: a key that default.yaml does not list, a value of another type or shape than
            default.yaml's, or a malformed override or experiment yaml.
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
        cfg = _merge_overrides(cfg, overrides)
        default = OmegaConf.load(CONFIG_DIR / "default.yaml")
        _check_types(default, cfg, "")
        cfg.teacher.extra = [
            _extra_teacher(default.teacher, e, i) for i, e in enumerate(cfg.teacher.extra or [])
        ]
        validate(cfg)
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise TrainConfigError(
            f"unknown config key: {getattr(e, 'msg', e)!s} "
            f"(every valid key is listed in {CONFIG_DIR / 'default.yaml'})"
        ) from e
    except OmegaConfBaseException as e:
        raise TrainConfigError(f"invalid config value: {e}") from e
    return cfg


def _merge_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    """``cfg`` with the ``key=value`` overrides merged; an override that is not YAML or cannot merge (a mapping
    for a list) is a :class:`TrainConfigError` naming it, not a yaml / TypeError traceback."""
    for override in overrides:
        try:
            OmegaConf.from_dotlist([override])
        except yaml.YAMLError as e:
            raise TrainConfigError(
                f"invalid config override {override}: not valid YAML ({getattr(e, 'problem', None) or e}); "
                "a list is written key='[a,b]'"
            ) from None
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except TypeError:
        for override in overrides:
            try:
                OmegaConf.merge(cfg, OmegaConf.from_dotlist([override]))
            except TypeError as e:
                raise TrainConfigError(
                    f"invalid config override {override}: {e} (see default.yaml)"
                ) from None
        raise


def _check_types(default: Any, cfg: Any, prefix: str) -> None:
    """Raise when a value's type differs from default.yaml's (ints are valid floats; null is free for scalars
    and lists): a section must stay a section, a list a list (``data.tile_dirs=/data/tiles`` would otherwise
    be read as one folder per character)."""
    for key, ref in default.items():
        val = cfg[key]
        if isinstance(ref, DictConfig) and not isinstance(val, DictConfig):
            raise TrainConfigError(
                f"invalid config value {prefix}{key}={_plain(val)!r}: expected a section of keys, set one "
                f"key at a time ({prefix}{key}.<key>=...; see default.yaml)"
            )
        if isinstance(ref, ListConfig) and val is not None and not isinstance(val, ListConfig):
            raise TrainConfigError(
                f"invalid config value {prefix}{key}={_plain(val)!r}: expected a list, e.g. "
                f"{prefix}{key}='[{_plain(val)}]'"
            )
        if f"{prefix}{key}" in FREE_FORM:
            continue
        if isinstance(ref, DictConfig):
            _check_types(ref, val, f"{prefix}{key}.")
        elif ref is not None and val is not None and not isinstance(ref, (list, ListConfig)):
            ok = isinstance(val, type(ref)) or (isinstance(ref, float) and isinstance(val, int))
            if not ok or (isinstance(val, bool) and not isinstance(ref, bool)):
                raise TrainConfigError(
                    f"invalid config value {prefix}{key}={val!r}: expected {type(ref).__name__} (see default.yaml)"
                )


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


#: the keys of a ``teacher.extra`` entry: the ``teacher`` keys of one teacher (heads and fsdp are per run)
TEACHER_KEYS = ("name", "arch", "model_kwargs", "weights", "mean", "std", "extra")


def _extra_teacher(default: Any, entry: Any, i: int) -> DictConfig:
    """``teacher.extra[i]`` with the ``teacher`` defaults of the keys it leaves out, type-checked like them.

    Raises:
        TrainConfigError: an entry that is not a mapping, a key that is not one of :data:`TEACHER_KEYS`, a
            value of another type than default.yaml's, or a nested ``extra`` that is not empty.
    """
    where = f"teacher.extra[{i}]"
    if not isinstance(entry, DictConfig):
        raise TrainConfigError(
            f"invalid config value {where}={_plain(entry)!r}: expected a mapping of teacher keys, e.g. "
            "teacher.extra='[{name: h0-mini}]'"
        )
    unknown = [str(k) for k in entry if k not in TEACHER_KEYS]
    if unknown:
        raise TrainConfigError(
            f"unknown config key {where}.{unknown[0]}: a teacher.extra entry takes {', '.join(TEACHER_KEYS)} "
            "(see teacher in default.yaml)"
        )
    ref = OmegaConf.create({k: default[k] for k in TEACHER_KEYS})
    full = OmegaConf.merge(ref, entry)
    assert isinstance(full, DictConfig)
    _check_types(ref, full, f"{where}.")
    if full.extra:
        raise TrainConfigError(
            f"{where}.extra: list every further teacher in teacher.extra itself, not nested"
        )
    return full


def validate(cfg: Any) -> None:
    """Check every enumerated key against its choices and every bounded number against its range.

    Raises:
        TrainConfigError: naming the key, its value and what it accepts.
    """
    for key, choices in ENUMS.items():
        val = OmegaConf.select(cfg, key)
        if val not in choices:
            raise TrainConfigError(
                f"invalid config value {key}={val!r}: expected one of {', '.join(choices)}"
            )
    for key, (lo, hi, text) in RANGES.items():
        val = OmegaConf.select(cfg, key)
        if val is not None and not (lo <= val <= hi):
            raise TrainConfigError(f"invalid config value {key}={val!r}: expected {text}")
    if cfg.train.max_steps == 0 or cfg.train.max_steps < -1:
        raise TrainConfigError(
            f"invalid config value train.max_steps={cfg.train.max_steps}: expected -1 or >= 1"
        )
    for key in ("data.mpp_override", "data.tile_dirs_mpp"):
        val = OmegaConf.select(cfg, key)
        if val is not None and not val > 0:
            raise TrainConfigError(f"invalid config value {key}={val!r}: expected a positive um/px, or null")


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
    try:
        exp = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TrainConfigError(
            f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or e})"
        ) from None
    if not isinstance(exp, DictConfig):
        raise TrainConfigError(f"{path}: an experiment yaml must map config keys to values, not a list")
    base = exp.pop("base", None)
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
