"""TAS-Balanced dual-supervision loss: ``L = L_Pair + alpha * L_InB``."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from tasb_ray.errors import ConfigError
from tasb_ray.losses.inbatch_margin_mse import inbatch_margin_mse
from tasb_ray.losses.margin_mse import margin_mse


def uses_inbatch(alpha: float) -> bool:
    """The one rule for when the in-batch term (and so an in-batch teacher) is needed: ``alpha > 0``."""
    return alpha > 0


class TasbLossOutput(NamedTuple):
    total: torch.Tensor
    pairwise: torch.Tensor
    inbatch: torch.Tensor | None  # None when no in-batch scores were given; detached when alpha == 0


class TasbLoss(nn.Module):
    """Dual supervision: pairwise Margin-MSE plus alpha times in-batch Margin-MSE.

    ``L = L_Pair(s_pos, s_neg, t_pos, t_neg) + alpha * L_InB(S_qp, S_qn, T_qp, T_qn)``

    With ``alpha == 0`` the in-batch arguments may be None (no in-batch teacher needed); if they are given
    anyway, ``L_InB`` is reported for logging but not added, so a non-finite value cannot leak into ``total``.

    Args:
        alpha: weight of the in-batch term (default 0.75); a finite number >= 0.

    References:
        Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
        Sampling", SIGIR 2021, arXiv 2104.06967, Section 3.3; the authors' code weights the pairwise term by
        ``in_batch_main_pair_lambda`` (1 here) and the in-batch term by ``in_batch_neg_lambda`` (alpha here).
    """

    def __init__(self, alpha: float = 0.75) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ConfigError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, student_pos: torch.Tensor, student_neg: torch.Tensor,
                teacher_pos: torch.Tensor, teacher_neg: torch.Tensor,
                student_qp: torch.Tensor | None = None, student_qn: torch.Tensor | None = None,
                teacher_qp: torch.Tensor | None = None, teacher_qn: torch.Tensor | None = None) -> TasbLossOutput:
        pairwise = margin_mse(student_pos, student_neg, teacher_pos, teacher_neg)
        mats = (student_qp, student_qn, teacher_qp, teacher_qn)
        given = [m is not None for m in mats]
        if any(given) and not all(given):
            raise ValueError("in-batch scores: give all four of student_qp, student_qn, teacher_qp, teacher_qn or none")
        if not all(given):
            if uses_inbatch(self.alpha):
                raise ValueError(f"alpha={self.alpha} needs in-batch student and teacher score matrices")
            return TasbLossOutput(pairwise, pairwise, None)
        inbatch = inbatch_margin_mse(*mats)  # type: ignore[arg-type]
        if not uses_inbatch(self.alpha):
            return TasbLossOutput(pairwise, pairwise, inbatch.detach())
        return TasbLossOutput(pairwise + self.alpha * inbatch, pairwise, inbatch)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
