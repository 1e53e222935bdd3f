"""Pairwise Margin-MSE distillation loss."""

from __future__ import annotations

import torch
from torch import nn


def margin_mse(student_pos: torch.Tensor, student_neg: torch.Tensor,
               teacher_pos: torch.Tensor, teacher_neg: torch.Tensor) -> torch.Tensor:
    """Margin-MSE: mean squared error between the student's and the teacher's score margins.

    For a batch of B triples (q_i, p_i^+, p_i^-)::

        L_pair = 1/B * sum_i ( (s(q_i, p_i^+) - s(q_i, p_i^-)) - (t(q_i, p_i^+) - t(q_i, p_i^-)) )^2

    Only the margin is matched, not the raw scores, so student and teacher may live on different score scales.
    Teacher scores are treated as constants (detached).

    Args:
        student_pos: student scores s(q_i, p_i^+), shape [B].
        student_neg: student scores s(q_i, p_i^-), shape [B].
        teacher_pos: teacher scores t(q_i, p_i^+), shape [B].
        teacher_neg: teacher scores t(q_i, p_i^-), shape [B].

    Returns:
        A scalar tensor.

    References:
        Hofstätter, Althammer, Schröder, Sertkan, Hanbury: "Improving Efficient Neural Ranking Models with
        Cross-Architecture Knowledge Distillation", arXiv 2010.02666 (2020) (the Margin-MSE loss).
        Used as L_Pair in Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced
        Topic Aware Sampling", SIGIR 2021, arXiv 2104.06967, Section 3.3.
    """
    shapes = {t.shape for t in (student_pos, student_neg, teacher_pos, teacher_neg)}
    if len(shapes) != 1 or student_pos.dim() != 1:
        raise ValueError(f"margin_mse expects four tensors of one shape [B], got "
                         f"{[tuple(t.shape) for t in (student_pos, student_neg, teacher_pos, teacher_neg)]}")
    student_margin = student_pos - student_neg
    teacher_margin = (teacher_pos - teacher_neg).detach()
    return torch.mean((student_margin - teacher_margin) ** 2)


class MarginMSELoss(nn.Module):
    """Module form of :func:`margin_mse`."""

    def forward(self, student_pos: torch.Tensor, student_neg: torch.Tensor,
                teacher_pos: torch.Tensor, teacher_neg: torch.Tensor) -> torch.Tensor:
        return margin_mse(student_pos, student_neg, teacher_pos, teacher_neg)
