"""A Hugging Face model card (``README.md``) for a model directory tasb-ray wrote.

The card is what a user who finds the directory on a model page, or in a vector-database pipeline, reads:
what the base model was, how the model pools and scores, how it was trained (teachers, sampler, plan hash)
and what it scored, with the command that produced those numbers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from tasb_ray.fileio import write_text
from tasb_ray.models.registry import HUB_IDS
from tasb_ray.models.st_format import ST_CONFIG, TASB_KEY

CARD = "README.md"
# "org/name" or a legacy "name" in the characters the hub allows; anything else (a path) is no base_model.
_HUB_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")

CITATION = """@inproceedings{hofstaetter2021tasb,
  title     = {Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling},
  author    = {Hofst{\\"a}tter, Sebastian and Lin, Sheng-Chieh and Yang, Jheng-Hong and Lin, Jimmy and Hanbury, Allan},
  booktitle = {Proceedings of SIGIR 2021},
  year      = {2021}
}"""


def hub_id(model: str | None) -> str | None:
    """The hub id of ``model`` (a short name, a hub id or a local path), or None for a local model."""
    if not model:
        return None
    model = str(model)
    if model in HUB_IDS:
        return HUB_IDS[model]
    if os.path.exists(model) or not _HUB_ID.match(model):
        return None
    return model


def _yaml_block(obj) -> str:
    return "```yaml\n" + yaml.safe_dump(obj, sort_keys=False).rstrip() + "\n```"


def _encoder_facts(model_dir: Path) -> dict:
    """Pooling, lengths and scale from the sentence-transformers config BertDot.save wrote."""
    facts: dict = {}
    cfg_file = model_dir / ST_CONFIG
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        facts = dict(cfg.get(TASB_KEY) or {})
        facts["similarity"] = cfg.get("similarity_fn_name")
    hf_config = model_dir / "config.json"
    if hf_config.is_file():
        facts["dim"] = json.loads(hf_config.read_text()).get("hidden_size")
    return facts


def _front_matter(name: str, base: str | None, dataset: str | None, metrics: dict | None) -> str:
    meta: dict = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", "dense-retrieval",
                 "tas-balanced", "tasb-ray"],
    }
    if base:
        meta["base_model"] = base
    if metrics:
        results = []
        for split, values in metrics.items():
            results.append({
                "task": {"type": "retrieval", "name": "Retrieval"},
                "dataset": {"name": f"{dataset} ({split})", "type": str(dataset), "split": split},
                "metrics": [{"type": re.sub(r"[^a-z0-9]+", "_", k.lower()).strip("_"), "name": k, "value": float(v)}
                            for k, v in values.items()],
            })
        meta["model-index"] = [{"name": name, "results": results}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def model_card(model_dir: str | os.PathLike, *, base_model: str | None, config: dict, teachers: dict,
               sampler: dict, plan_hash: str, metrics: dict | None, command: str,
               metrics_note: str | None = None) -> str:
    """The card's text. ``metrics``: split -> metric -> value of *this* model (None: see ``metrics_note``)."""
    root = Path(model_dir)
    facts = _encoder_facts(root)
    name = str(config.get("name") or root.name)
    dataset = (config.get("data") or {}).get("dataset")
    base = hub_id(base_model)
    pooling = facts.get("pooling", "?")
    normalize = bool(facts.get("normalize"))
    qlen, plen = facts.get("query_max_len"), facts.get("passage_max_len")
    scale = float(facts.get("score_scale") or 1.0)
    similarity = facts.get("similarity") or ("cosine" if normalize else "dot")
    base_text = f"[{base}](https://huggingface.co/{base})" if base else f"`{base_model}` (a local model)"

    lines = [_front_matter(name, base, dataset, metrics),
             f"# {name}: a TAS-Balanced dense retriever",
             "",
             f"A BERT-DOT dense retriever fine-tuned from {base_text} with TAS-Balanced ([Hofstätter et al., "
             "SIGIR 2021](https://arxiv.org/abs/2104.06967)) by tasb-ray: queries and passages are encoded by the "
             "same transformer and scored by the dot product of their vectors.",
             "",
             "## Model",
             "",
             f"- **Pooling:** {'the [CLS] token vector' if pooling == 'cls' else 'mean of the token vectors'}"
             f"{', L2-normalised' if normalize else ', not normalised'}",
             f"- **Dimensions:** {facts.get('dim', '?')}",
             f"- **Similarity:** {similarity}" + (" (the vectors are unit length, so dot product = cosine)"
                                                   if normalize else " product"),
             f"- **Maximum length:** queries {qlen} tokens, passages {plen} tokens. sentence-transformers has one "
             f"`max_seq_length`; it is set to the passage length ({plen}).",
             ]
    if scale != 1.0:
        lines.append(f"- **Score scale:** training scored `{scale:g} * dot(q, p)`. sentence-transformers' similarity "
                     "functions cannot carry a scale, so `model.similarity` returns the unscaled value; rankings are "
                     f"identical, multiply by {scale:g} to get the scores the model was trained on.")
    lines += ["",
              "## Usage (sentence-transformers)",
              "",
              "```python",
              "from sentence_transformers import SentenceTransformer",
              "",
              f'model = SentenceTransformer("{root}")',
              'passages = model.encode(["The heart pumps blood through the arteries.", "Paris is in France."])',
              f"model.max_seq_length = {qlen}  # queries were truncated at {qlen} tokens in training",
              'queries = model.encode(["what does the heart do"])',
              f"model.max_seq_length = {plen}",
              "scores = model.similarity(queries, passages)" + (f"  # x {scale:g} for the training scale"
                                                                  if scale != 1.0 else ""),
              "```",
              "",
              "## Usage (transformers)",
              "",
              "`AutoModel.from_pretrained` loads the weights but not the pooling: take "
              + ("`last_hidden_state[:, 0]`" if pooling == "cls"
                 else "the attention-mask-weighted mean of `last_hidden_state`")
              + (", then L2-normalise it" if normalize else "") + ".",
              "",
              "## Training",
              "",
              f"- **Base model:** {base_text}",
              f"- **Dataset:** `{dataset}`",
              f"- **Plan hash:** `{plan_hash}` (sha256 of the batch plan: the same hash means the same batches, "
              "in the same order)",
              "",
              "Teachers:",
              "",
              _yaml_block(teachers),
              "",
              "Sampler:",
              "",
              _yaml_block(sampler),
              "",
              "## Evaluation",
              ""]
    if metrics:
        names = list(dict.fromkeys(k for values in metrics.values() for k in values))
        lines.append("| split | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for split, values in metrics.items():
            cells = [f"{values[k]:.4f}" if k in values else "–" for k in names]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
        lines += ["", "Model choices are made on dev; test is reported, never tuned on.", ""]
    if metrics_note:
        lines += [metrics_note, ""]
    lines += ["Produced by:", "", "```bash", command, "```", "",
              "## Training config", "", _yaml_block(config), "",
              "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def write_model_card(model_dir: str | os.PathLike, **kwargs) -> Path:
    """Write :func:`model_card` to ``model_dir/README.md`` (atomically); returns its path."""
    path = Path(model_dir) / CARD
    write_text(path, model_card(model_dir, **kwargs))
    return path


def write_run_cards(out: str | os.PathLike, config: dict, metrics: dict, *, plan_hash: str, selected: str,
                    command: str, model_dirs: tuple[str, ...] = ("model", "best")) -> list[Path]:
    """Cards for the model directories of a run in ``out``; only the ``selected`` one carries the metrics.

    Args:
        out: the run's output directory.
        config: the run's config as plain data (``to_dict(cfg)``).
        metrics: split -> metric -> value of the selected model.
        selected: the directory name the metrics belong to (``best`` or ``model``).
        command: the command that reproduces the run and its metrics.
    """
    out = Path(out)
    written = []
    for name in model_dirs:
        d = out / name
        if not d.is_dir():
            continue
        note = None if name == selected else (
            f"This is the last training step's model; the reported metrics belong to `{selected}/` "
            f"(selected on dev), so none are listed here.")
        written.append(write_model_card(
            d, base_model=(config.get("student") or {}).get("model"), config=config,
            teachers=config.get("teachers") or {}, sampler=config.get("sampler") or {}, plan_hash=plan_hash,
            metrics=metrics if name == selected else None, command=command, metrics_note=note))
    return written
