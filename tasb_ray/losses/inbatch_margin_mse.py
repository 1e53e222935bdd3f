"""In-batch Margin-MSE: the second half of TAS-Balanced's dual supervision."""

from __future__ import annotations

import torch
from torch import nn


def _offdiag_margin_mse(student: torch.Tensor, teacher: torch.Tensor,
                        student_own: torch.Tensor, teacher_own: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    diff = (student_own.unsqueeze(1) - student) - (teacher_own.unsqueeze(1) - teacher)
    return (diff ** 2)[off].mean()


def inbatch_margin_mse(student_qp: torch.Tensor, student_qn: torch.Tensor,
                       teacher_qp: torch.Tensor, teacher_qn: torch.Tensor) -> torch.Tensor:
    """In-batch Margin-MSE over the other queries' passages of the batch.

    With a batch of B triples (q_i, p_i^+, p_i^-), the score matrices are ``S_qp[i, j] = s(q_i, p_j^+)`` and
    ``S_qn[i, j] = s(q_i, p_j^-)`` for the student, ``T_qp``/``T_qn`` likewise for the in-batch teacher.
    Query i's own positive is the diagonal ``S_qp[i, i]``; every passage of another triple (j != i), positive
    or negative, serves as an in-batch negative::

        L_pos = 1/(B(B-1)) * sum_{i != j} ( (S_qp[i,i] - S_qp[i,j]) - (T_qp[i,i] - T_qp[i,j]) )^2
        L_neg = 1/(B(B-1)) * sum_{i != j} ( (S_qp[i,i] - S_qn[i,j]) - (T_qp[i,i] - T_qn[i,j]) )^2
        L_InB = (L_pos + L_neg) / 2

    The diagonal of ``S_qn`` (q_i with its own negative) is excluded: that pair is the pairwise loss's job.
    This matches the authors' implementation (matchmaker ``train.py``, in-batch negatives with a dynamic
    teacher). Teacher scores are treated as constants (detached). With B = 1 there is no in-batch pair and
    the loss is 0 (still connected to the graph so ``backward()`` works).

    Args:
        student_qp: student scores of every query against every positive of the batch, shape [B, B].
        student_qn: student scores of every query against every negative of the batch, shape [B, B].
        teacher_qp: teacher scores, same layout as ``student_qp``.
        teacher_qn: teacher scores, same layout as ``student_qn``.

    Returns:
        A scalar tensor.

    References:
        Hofstätter, Lin, Yang, Lin, Hanbury: "Efficiently Teaching an Effective Dense Retriever with Balanced
        Topic Aware Sampling", SIGIR 2021, arXiv 2104.06967, Section 3.3 (dual supervision, L_InB).
        Margin-MSE itself: Hofstätter et al., arXiv 2010.02666 (2020).
    """
    mats = (student_qp, student_qn, teacher_qp, teacher_qn)
    if len({m.shape for m in mats}) != 1 or student_qp.dim() != 2 or student_qp.shape[0] != student_qp.shape[1]:
        raise ValueError(f"inbatch_margin_mse expects four [B, B] matrices, got {[tuple(m.shape) for m in mats]}")
    b = student_qp.shape[0]
    if b < 2:
        return (student_qp.sum() + student_qn.sum()) * 0.0
    teacher_qp, teacher_qn = teacher_qp.detach(), teacher_qn.detach()
    off = ~torch.eye(b, dtype=torch.bool, device=student_qp.device)
    s_own, t_own = torch.diagonal(student_qp), torch.diagonal(teacher_qp)
    loss_pos = _offdiag_margin_mse(student_qp, teacher_qp, s_own, t_own, off)
    loss_neg = _offdiag_margin_mse(student_qn, teacher_qn, s_own, t_own, off)
    return 0.5 * (loss_pos + loss_neg)


class InBatchMarginMSELoss(nn.Module):
    """Module form of :func:`inbatch_margin_mse`."""

    def forward(self, student_qp: torch.Tensor, student_qn: torch.Tensor,
                teacher_qp: torch.Tensor, teacher_qn: torch.Tensor) -> torch.Tensor:
        return inbatch_margin_mse(student_qp, student_qn, teacher_qp, teacher_qn)
