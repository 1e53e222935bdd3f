"""Typed teacher configuration, read from plain dicts (YAML / JSON / CLI) with unknown keys rejected."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from tasb_ray.config import check_range
from tasb_ray.errors import ConfigError

KINDS = ("cross-encoder", "colbert", "bi-encoder", "bm25", "ensemble", "file")
SIMILARITIES = ("dot", "cosine")
_NEEDS_MODEL = ("cross-encoder", "colbert", "bi-encoder")


@dataclass
class TeacherConfig:
    """One teacher, or an ensemble of them.

    Attributes:
        kind: one of :data:`KINDS`.
        model: HF id, local path or short name (``minilm-l6``); required for cross-encoder, colbert
            and bi-encoder.
        weight: this teacher's weight when it is a component of an ensemble.
        components: the member teachers of an ``ensemble`` (each a :class:`TeacherConfig`).
        path: the score file of a ``file`` teacher (authors' TSV, or Parquet).
        projection: colbert only: a file holding the ``linear.weight`` [dim, hidden] projection when
            the checkpoint itself has none (safetensors, or a torch state dict / tensor).
        similarity: bi-encoder only: ``dot`` or ``cosine``.
        max_query_len, max_passage_len: truncation lengths in tokens (colbert pads queries to
            ``max_query_len`` with [MASK]; the cross-encoder caps the query part at ``max_query_len``).
        batch_size: sequences per forward pass (neural kinds).
        k1, b: BM25 parameters (Anserini's BEIR defaults 0.9 / 0.4).
        device: ``cpu``, ``cuda``, ``cuda:1``...; ``None`` picks CUDA when available.
    """

    kind: str
    model: str | None = None
    weight: float = 1.0
    components: list[TeacherConfig] = field(default_factory=list)
    path: str | None = None
    projection: str | None = None
    similarity: str = "dot"
    max_query_len: int = 32
    max_passage_len: int = 256
    batch_size: int = 32
    k1: float = 0.9
    b: float = 0.4
    device: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "teacher") -> TeacherConfig:
        """Build from a mapping; unknown keys raise ``ConfigError("teacher: unknown key 'x'")``.

        Args:
            d: the mapping; ``components`` is a list of mappings (or configs), built recursively.
            where: the location named in error messages (nested components get ``teacher.components[i]``).
        """
        if isinstance(d, TeacherConfig):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in names:
                raise ConfigError(f"{where}: unknown key {key!r}")
        if "kind" not in d:
            raise ConfigError(f"{where}: missing key 'kind' (one of {', '.join(KINDS)})")
        values = dict(d)
        comps = values.get("components") or []
        if not isinstance(comps, (list, tuple)):
            raise ConfigError(f"{where}: 'components' must be a list, got {type(comps).__name__}")
        values["components"] = [cls.from_dict(c, f"{where}.components[{i}]") for i, c in enumerate(comps)]
        _check_types(values, where)
        try:
            return cls(**values)
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (round-trips through :meth:`from_dict`); what travels to Ray actors."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for name in ("model", "path", "projection"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if self.kind not in KINDS:
            raise ConfigError(f"unknown kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.kind in _NEEDS_MODEL and not self.model:
            raise ConfigError(f"kind {self.kind!r} needs 'model'")
        if self.kind == "file" and not self.path:
            raise ConfigError("kind 'file' needs 'path'")
        if self.kind == "ensemble" and not self.components:
            raise ConfigError("kind 'ensemble' needs a non-empty 'components' list")
        if self.kind != "ensemble" and self.components:
            raise ConfigError(f"'components' is only for kind 'ensemble', not {self.kind!r}")
        if self.similarity not in SIMILARITIES:
            raise ConfigError(f"'similarity' must be one of {SIMILARITIES}, got {self.similarity!r}")
        for name in ("max_query_len", "max_passage_len"):
            if getattr(self, name) < 2:
                raise ConfigError(f"{name!r} must be >= 2, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ConfigError(f"'batch_size' must be >= 1, got {self.batch_size}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")
        # NaN passes every comparison above; a NaN or infinite weight would poison an ensemble's scores.
        for name in ("weight", "k1", "b"):
            check_range(name, getattr(self, name))
        self.components = [c if isinstance(c, TeacherConfig) else TeacherConfig.from_dict(c)
                           for c in self.components]

    def needs_corpus(self) -> bool:
        """Whether building this teacher needs the corpus (bm25 statistics, possibly in an ensemble)."""
        return self.kind == "bm25" or any(c.needs_corpus() for c in self.components)


_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "model": (str, os.PathLike, type(None)), "weight": (int, float),
    "path": (str, os.PathLike, type(None)), "projection": (str, os.PathLike, type(None)), "similarity": (str,), "max_query_len": (int,), "max_passage_len": (int,),
    "batch_size": (int,), "k1": (int, float), "b": (int, float), "device": (str, type(None)),
}


def _check_types(values: dict[str, Any], where: str) -> None:
    # YAML happily gives "32" or true where a number is meant; fail here rather than deep in a worker.
    for key, types in _TYPES.items():
        if key in values:
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, types):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ConfigError(f"{where}: key {key!r} must be {want}, got {v!r}")
