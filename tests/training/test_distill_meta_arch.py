"""``DistillMetaArch.update_ema``: the exported student is ``ema = m * ema + (1 - m) * student`` (dinov2's
``update_teacher``), checked on the real smoke-config student with values written out by hand."""

from __future__ import annotations

import pytest
import torch

from pathdistill_train.config import load_config
from pathdistill_train.train.distill_meta_arch import DistillMetaArch


def test_update_ema_keeps_m_of_the_ema_and_takes_1_minus_m_of_the_student() -> None:
    meta = DistillMetaArch(load_config("smoke_cpu", ["loss.mode=feature"]))
    ema = dict(meta.ema_student.named_parameters())
    student = dict(meta.student.named_parameters())
    assert ema.keys() == student.keys() and len(ema) > 10
    with torch.no_grad():
        for p in ema.values():
            p.fill_(2.0)
        for p in student.values():
            p.fill_(-1.0)
    meta.update_ema(0.9)
    for name, p in ema.items():  # 0.9 * 2 + 0.1 * (-1) = 1.7
        torch.testing.assert_close(p, torch.full_like(p, 1.7), msg=name)
    meta.update_ema(0.5)  # 0.5 * 1.7 + 0.5 * (-1) = 0.35
    assert float(next(iter(ema.values())).flatten()[0]) == pytest.approx(0.35, abs=1e-6)
    for p in student.values():  # the student itself is left alone
        torch.testing.assert_close(p, torch.full_like(p, -1.0))
    assert not any(p.requires_grad for p in ema.values())  # the EMA copy gets no gradient
