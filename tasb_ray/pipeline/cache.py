"""Cached pipeline stages: each artefact lives in ``<work_dir>/<stage>-<key>/`` and is built once.

The key hashes everything the artefact depends on, so the trials of a sweep that share data,
candidates, teacher or cluster settings share one copy. A stage directory is published by an atomic
rename with ``stage.json`` written last, so an interrupted build is simply built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from tasb_ray.distributed.batch_encoder import model_fingerprint
from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import atomic_dir, write_json

STAGE_FILE = "stage.json"
log = logging.getLogger(__name__)


class StageNotPrepared(TasbRayError):
    """A stage asked for with ``require_cached`` is not on disk."""


def stage_key(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_stage(work_dir: str | os.PathLike, name: str, inputs: Any,
                 build: Callable[[Path], dict], *, require_cached: bool = False) -> tuple[Path, dict]:
    """Return (directory, info) of stage ``name`` for ``inputs``, running ``build(tmp_dir) -> info`` if absent.

    With ``require_cached`` an absent stage raises :class:`StageNotPrepared` instead (sweep trials must never redo
    shared work).
    """
    path = Path(work_dir) / f"{name}-{stage_key(inputs)}"
    marker = path / STAGE_FILE
    if marker.is_file():
        log.info("stage %s: cached at %s", name, path)
        return path, json.loads(marker.read_text())["info"]
    if require_cached:
        raise StageNotPrepared(f"shared stage {name!r} is not prepared: {path} is missing "
                           "(run prepare_shared_stages for this config first)")
    log.info("stage %s: building %s (%s)", name, path, why_rebuilt(Path(work_dir), name, inputs))
    with atomic_dir(path) as tmp:
        info = build(tmp)
        write_json(tmp / STAGE_FILE, {"name": name, "inputs": inputs, "info": info})
    return path, info


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out.extend(_differences(old.get(k), new.get(k), f"{prefix}{k}."))
        return out
    return [prefix.rstrip(".")] if old != new else []


def why_rebuilt(work_dir: Path, name: str, inputs: Any) -> str:
    """What differs from the newest finished stage of the same name, for the log ("no earlier stage" if none)."""
    earlier = sorted(work_dir.glob(f"{name}-*/{STAGE_FILE}"), key=lambda p: p.stat().st_mtime)
    if not earlier:
        return "no earlier stage"
    try:
        old = json.loads(earlier[-1].read_text()).get("inputs")
    except (OSError, ValueError):
        return "no readable earlier stage"
    fresh = json.loads(json.dumps(inputs, sort_keys=True, default=str))
    diff = _differences(old, fresh)
    shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
    return f"differs from {earlier[-1].parent.name} in {shown}" if diff else "same inputs as an unfinished build"


def local_model_contents(names) -> dict[str, str]:
    """Fingerprints (weights and configs) of the models among ``names`` that are local directories, by name.

    A model given by path can be retrained in place; its path alone would find stages built with the old weights.
    Short names and hub ids are left out (their content is pinned by the package or the hub revision), so keys of
    stages built from them do not change.
    """
    out = {}
    for name in names:
        if name and Path(str(name)).expanduser().is_dir():
            out[str(name)] = model_fingerprint(str(Path(str(name)).expanduser().resolve()))
    return out


def dataset_identity(manifest: dict) -> dict:
    """What a dataset's content is: its source files' hashes and the split options."""
    files = manifest["source"]["files"]
    return {"name": manifest["name"], "files": {k: v["sha256"] for k, v in files.items()},
            "options": manifest["options"]}
