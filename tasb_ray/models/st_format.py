"""The sentence-transformers layout of a saved :class:`~tasb_ray.models.encoder.BertDot`.

Without ``modules.json`` sentence-transformers silently builds mean pooling without normalisation, which
gives wrong vectors for a CLS student and wrongly scaled ones for a normalised student. So every directory
``BertDot.save`` writes also carries the files that make ``SentenceTransformer(path)`` encode exactly as
tasb-ray does. No sentence-transformers import: it is an optional extra, and the files are plain JSON.

The module types and config keys are the long-standing ones (``sentence_transformers.models.*``,
``pooling_mode_*_tokens``, ``max_seq_length``) that every sentence-transformers release since 2.x reads;
6.x still reads them (it converts them on load), so one layout serves old and new users.

Two things sentence-transformers cannot express are written under a ``tasb_ray`` key of
``config_sentence_transformers.json`` (which sentence-transformers ignores) and in the model card:

- it has one ``max_seq_length``; tasb-ray truncates queries and passages separately. The passage length
  is used, as it governs the corpus side that goes into a vector database.
- its similarity functions have no scale; a student trained with ``score_scale`` s scored ``s * (q · p)``.
  Rankings are unchanged by a positive scale, only the score values differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ST_CONFIG = "config_sentence_transformers.json"
MODULES = "modules.json"
ST_TRANSFORMER_CONFIG = "sentence_bert_config.json"
POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
TASB_KEY = "tasb_ray"


def similarity_fn(normalize: bool) -> str:
    # Normalised vectors: dot product equals cosine; "cosine" tells a vector database to use it.
    return "cosine" if normalize else "dot"


def st_files(spec, dim: int, score_scale: float = 1.0) -> dict[str, dict | list]:
    """Relative path -> JSON content of every sentence-transformers file for ``spec`` (an EncoderSpec)."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    ]
    files: dict[str, dict | list] = {}
    if spec.normalize:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"})
        files[f"{NORMALIZE_DIR}/config.json"] = {"module_input_name": "sentence_embedding",
                                                 "module_output_name": "sentence_embedding"}
    files[MODULES] = modules
    files[ST_TRANSFORMER_CONFIG] = {"max_seq_length": int(spec.passage_max_len), "do_lower_case": False}
    files[f"{POOLING_DIR}/config.json"] = {
        "word_embedding_dimension": int(dim),
        "pooling_mode_cls_token": spec.pooling == "cls",
        "pooling_mode_mean_tokens": spec.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    files[ST_CONFIG] = {
        "model_type": "SentenceTransformer",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": similarity_fn(spec.normalize),
        TASB_KEY: {
            "pooling": spec.pooling,
            "normalize": bool(spec.normalize),
            "query_max_len": int(spec.query_max_len),
            "passage_max_len": int(spec.passage_max_len),
            "score_scale": float(score_scale),
            "note": (f"tasb-ray truncates queries at {spec.query_max_len} tokens and passages at "
                     f"{spec.passage_max_len}; max_seq_length is the passage length (set "
                     f"model.max_seq_length = {spec.query_max_len} to encode queries exactly as in training). "
                     f"Training scored score_scale * dot(q, p); sentence-transformers similarity has no scale, "
                     f"which changes score values but not rankings."),
        },
    }
    return files


def write_st_layout(path: str | os.PathLike, spec, dim: int, score_scale: float = 1.0) -> None:
    """Write the sentence-transformers files into the model directory ``path`` (weights already there).

    Called on a directory that is being written (BertDot.save inside an ``atomic_dir``), so plain writes
    suffice; a stale Normalize directory from an earlier save of an unnormalised spec is not referenced by
    ``modules.json`` and so is harmless.
    """
    root = Path(path)
    for rel, content in st_files(spec, dim, score_scale).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(content, indent=2) + "\n")


def saved_score_scale(path: str | os.PathLike) -> float | None:
    """The ``score_scale`` recorded by :func:`write_st_layout`, or None when the directory has none."""
    f = Path(path) / ST_CONFIG
    if not f.is_file():
        return None
    try:
        value = json.loads(f.read_text()).get(TASB_KEY, {}).get("score_scale")
    except (json.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None
