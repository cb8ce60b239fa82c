"""The feature-level terms of the distillation loss (``loss.mode`` feature or both), per teacher: the student's
CLS against each teacher's over the view pairs of ``loss.pairing``, patch tokens view by view, the CLS spread,
and the (student, student, teacher) CLS triples of the CKA and relational terms.

Tokens are flattened view-major: (V * B, ...) with rows ``v * B + b`` (V = 2 global views). The terms on the
geometry of a batch (spread, CKA, relational) see the global batch: every rank's CLS tokens, gathered (B = the
global batch in their shapes below), as one process holding that batch would.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pathdistill_train.distributed import gather_batch
from pathdistill_train.loss import FeatureDistillLoss
from pathdistill_train.loss.views import view_pairs


def feature_terms(
    feature_losses: Iterable[nn.Module],
    teacher_tokens: list[dict[str, torch.Tensor]],
    student: dict[str, torch.Tensor],
    pairing: str,
) -> dict[str, list[torch.Tensor]]:
    """Feature-loss terms per teacher (``feature_losses``, one :class:`FeatureDistillLoss` each, in teacher
    order): CLS over :func:`view_pairs` of ``pairing``, patches same-view, and the student's CLS spread."""
    v = 2
    s_cls = student["cls"].unflatten(0, (v, -1))
    pairs = view_pairs(v, v, pairing)
    out: dict[str, list[torch.Tensor]] = {"feat_cls": [], "feat_patch": []}
    fls: list[FeatureDistillLoss] = list(feature_losses)  # type: ignore[arg-type]
    for fl, t in zip(fls, teacher_tokens):
        t_cls = t["cls"].unflatten(0, (v, -1))
        out["feat_cls"].append(torch.stack([fl.cls_term(s_cls[j], t_cls[i]) for i, j in pairs]).mean())
        out["feat_patch"].append(fl.patch_term(student["patch"], t["patch"]))
    if fls[0].spread_weight > 0:  # on the student's own CLS, once (not per teacher), per view
        every = gather_batch(s_cls, dim=1)  # (V, global B, Ds)
        out["feat_spread"] = [torch.stack([fls[0].spread_term(every[j]) for j in range(v)]).mean()]
    return out


def cls_view_triples(
    feature_losses: Iterable[nn.Module],
    teacher_tokens: list[dict[str, torch.Tensor]],
    student: dict[str, torch.Tensor],
    pairing: str,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(student view j CLS (B, Ds), student view i CLS (B, Ds), teacher view i targets (B, Dt)) for every
    :func:`view_pairs` pair (i, j) of ``pairing`` and teacher: the inputs of the terms on the exported CLS's
    geometry (CKA, relational). Targets are the feature loss's (normalised, centred when
    ``feature_center_teacher``)."""
    v = 2
    s_cls = gather_batch(student["cls"].unflatten(0, (v, -1)), dim=1)
    fls: list[FeatureDistillLoss] = list(feature_losses)  # type: ignore[arg-type]
    triples = []
    for fl, t in zip(fls, teacher_tokens):
        t_cls = gather_batch(fl.cls_target(t["cls"]).unflatten(0, (v, -1)), dim=1)
        triples += [(s_cls[j], s_cls[i], t_cls[i]) for i, j in view_pairs(v, v, pairing)]
    return triples
