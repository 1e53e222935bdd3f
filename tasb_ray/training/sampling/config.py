"""The sampler's settings: which query composition and which pair strategy, chosen by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from tasb_ray.config import is_int
from tasb_ray.errors import ConfigError


class Composition(str, Enum):
    """How a batch's queries are chosen (``SamplerConfig.sampling``)."""

    RANDOM = "random"              # all training queries shuffled per epoch
    TAS = "tas"                    # one random topic cluster per batch, random pairs
    TAS_BALANCED = "tas-balanced"  # one random topic cluster per batch, balanced-margin pairs
    TAS_AUTHORS = "tas-authors"    # the authors' loader: a cluster drawn with replacement per batch, no epochs; bins


class PairStrategy(str, Enum):
    """How each query's (positive, negative) pair is chosen (``SamplerConfig.pair_strategy``)."""

    RANDOM = "random"
    BINS = "bins"
    HARD_MARGIN = "hard-margin"


SAMPLINGS = tuple(c.value for c in Composition)
PAIR_STRATEGIES = tuple(p.value for p in PairStrategy)


@dataclass(frozen=True)
class SamplerConfig:
    """How batches are composed. Invalid values raise :class:`ConfigError` naming the field.

    ``pair_strategy=None`` means ``bins`` for ``tas-balanced`` and ``tas-authors``, ``random`` otherwise.
    ``margin_cutoff`` is required by (and only allowed with) ``hard-margin``: a query's pairs with teacher margin
    ``pos_score - neg_score < margin_cutoff`` are eligible; a query with no such pair falls back to its
    smallest-margin pair(s) (all pairs tied at the minimum, uniformly), so every query stays trainable.
    """

    sampling: str = "tas-balanced"
    pair_strategy: str | None = None
    batch_size: int = 32
    bins: int = 10
    margin_cutoff: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"sampling must be one of {list(SAMPLINGS)}, got {self.sampling!r}")
        if self.pair_strategy is not None and self.pair_strategy not in PAIR_STRATEGIES:
            raise ConfigError(f"pair_strategy must be one of {list(PAIR_STRATEGIES)} or null, got {self.pair_strategy!r}")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not is_int(self.bins) or self.bins < 1:
            raise ConfigError(f"bins must be an integer >= 1, got {self.bins!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.margin_cutoff is not None:
            if isinstance(self.margin_cutoff, bool) or not isinstance(self.margin_cutoff, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(self.margin_cutoff):
                raise ConfigError(f"margin_cutoff must be a finite number or null, got {self.margin_cutoff!r}")
            if self.effective_pair_strategy != "hard-margin":
                raise ConfigError(f"margin_cutoff is only used by pair_strategy 'hard-margin', "
                                  f"not {self.effective_pair_strategy!r}; remove it")
        elif self.effective_pair_strategy == "hard-margin":
            raise ConfigError("margin_cutoff is required when pair_strategy is 'hard-margin'")

    @property
    def effective_pair_strategy(self) -> str:
        if self.pair_strategy is not None:
            return self.pair_strategy
        return "bins" if self.sampling in (Composition.TAS_BALANCED.value, Composition.TAS_AUTHORS.value) else "random"

    @property
    def uses_clusters(self) -> bool:
        return self.sampling != "random"
