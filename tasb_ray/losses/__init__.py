"""Distillation losses: pairwise Margin-MSE, in-batch Margin-MSE and their TAS-Balanced combination."""

from tasb_ray.losses.combined import TasbLoss, TasbLossOutput
from tasb_ray.losses.inbatch_margin_mse import InBatchMarginMSELoss, inbatch_margin_mse
from tasb_ray.losses.margin_mse import MarginMSELoss, margin_mse

__all__ = ["InBatchMarginMSELoss", "MarginMSELoss", "TasbLoss", "TasbLossOutput", "inbatch_margin_mse", "margin_mse"]
