"""Resolve a dataset, validate it, and convert it once to Parquet with a manifest.

Later stages read only the Parquet cache. A cache directory is published by one atomic rename,
so an interrupted conversion never leaves a cache that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasb_ray.data import beir, irds, msmarco
from tasb_ray.data.splits import carve_dev
from tasb_ray.errors import DataFormatError, TasbRayError
from tasb_ray.fileio import atomic_dir, sha256_file, write_json
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT

# 2: corpus.parquet gains a ``row`` int64 column (0..N-1, stable row ids for sharded encoding), is written in
#    row groups of ROW_GROUP_ROWS rows, and the manifest records the sha256 of the Parquet tables ("tables").
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ROW = "row"
ROW_GROUP_ROWS = 65_536
DEFAULT_SEARCH_PATH = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data",)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser().resolve()
    if os.environ.get("TASB_RAY_CACHE"):
        return Path(os.environ["TASB_RAY_CACHE"]).expanduser().resolve()
    return Path("~/.cache/tasb-ray").expanduser()


def search_path() -> list[Path]:
    """``TASB_RAY_DATA`` (os.pathsep-separated), then ``../shared/data`` beside the checkout and the cwd."""
    paths = [Path(p) for p in os.environ.get("TASB_RAY_DATA", "").split(os.pathsep) if p]
    paths += [p.resolve() for p in DEFAULT_SEARCH_PATH]
    paths.append(Path.cwd().resolve().parent / "shared" / "data")
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: ``kind`` is 'beir', 'msmarco' or 'irds'."""

    name: str
    kind: str
    location: str  # a directory for beir/msmarco, an ir_datasets id for irds

    def files(self) -> dict[str, Path]:
        root = Path(self.location)
        if self.kind == "beir":
            out = {"corpus.jsonl": root / "corpus.jsonl", "queries.jsonl": root / "queries.jsonl"}
            out.update({f"qrels/{s}.tsv": p for s, p in beir.beir_splits(root).items()})
            return out
        if self.kind == "msmarco":
            out = {"collection.tsv": root / "collection.tsv"}
            out.update({p.name: p for p in sorted(root.glob("queries.*.tsv"))})
            out.update({p.name: p for p in sorted(root.glob("qrels.*")) if p.suffix in (".tsv", ".txt")})
            return out
        return {}


def msmarco_split(path: Path) -> str:
    """``qrels.dev.tsv`` → ``dev`` (``qrels.dev.small.tsv`` → ``dev``). ``qrels.tsv`` names no split: refused
    rather than guessed, since a wrong guess would evaluate or train on the wrong queries."""
    parts = path.name.split(".")
    if len(parts) < 3 or not parts[1]:
        raise DataFormatError(path, f"cannot tell the split from the name; rename it {parts[0]}.<split>{path.suffix} "
                                    f"(e.g. {parts[0]}.dev{path.suffix})")
    return parts[1]


def is_msmarco_dir(root: Path) -> bool:
    return (root / "collection.tsv").is_file()


def _source_for_dir(name: str, root: Path) -> Source | None:
    if beir.is_beir_dir(root):
        return Source(name, "beir", str(root.resolve()))
    if is_msmarco_dir(root):
        return Source(name, "msmarco", str(root.resolve()))
    return None


def resolve_source(dataset: str) -> Source:
    """A directory path, a name on the search path, ``irds:ID``, or an ir_datasets id."""
    if dataset.startswith("irds:"):
        location = dataset[5:]
        if irds.is_split_spec(location):
            ids = irds.parse_split_spec(location)
            # Named by what the ids have in common (msmarco-passage/train/judged + .../dev/small → msmarco-passage).
            common = os.path.commonprefix([i.split("/") for i in ids.values()])
            return Source("_".join(common) or "irds-splits", "irds", location)
        return Source(location.replace("/", "_"), "irds", location)
    p = Path(dataset).expanduser()
    if p.is_dir():
        src = _source_for_dir(p.resolve().name, p)
        if src is None:
            raise TasbRayError(f"{p}: not a dataset directory (expected corpus.jsonl + queries.jsonl, or collection.tsv)")
        return src
    if Path(dataset).is_absolute():
        raise TasbRayError(f"dataset {dataset!r}: no such directory")
    if ".." in Path(dataset).parts:
        raise TasbRayError(f"dataset {dataset!r}: not a directory, and a name looked up on the search path may not "
                           "contain '..' (give the dataset directory's path instead)")
    for base in search_path():
        cand = base / dataset
        if cand.is_dir() and (src := _source_for_dir(dataset, cand)):
            return src
    if irds.available():
        return Source(dataset.replace("/", "_"), "irds", dataset)
    where = ", ".join(str(b) for b in search_path())
    raise TasbRayError(f"dataset {dataset!r} not found: not a directory, not under {where} "
                       "(set TASB_RAY_DATA), and ir_datasets is not installed")


def _file_fingerprints(src: Source) -> dict[str, dict]:
    out = {}
    for rel, path in src.files().items():
        st = path.stat()
        out[rel] = {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def _load_source(src: Source) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame], dict[str, str]]:
    """Returns corpus, queries, qrels by split, and the file each qrels split came from."""
    root = Path(src.location)
    if src.kind == "beir":
        splits = beir.beir_splits(root)
        return (beir.read_corpus_jsonl(root / "corpus.jsonl"), beir.read_queries_jsonl(root / "queries.jsonl"),
                {s: beir.read_qrels_tsv(p) for s, p in splits.items()}, {s: str(p) for s, p in splits.items()})
    if irds.is_split_spec(src.location):
        ids = irds.parse_split_spec(src.location)
        corpus, queries, qrels = irds.load_splits(ids)
        return corpus, queries, qrels, {s: f"irds:{ids[s]}" for s in qrels}
    corpus, queries, qrels = irds.load(src.location)
    return corpus, queries, qrels, {s: f"irds:{src.location}" for s in qrels}


def _load_msmarco(root: Path, corpus_out: Path) -> tuple[pa.ChunkedArray, pd.DataFrame, dict[str, pd.DataFrame],
                                                       dict[str, str]]:
    """Writes ``corpus.parquet`` while reading (8.8M passages are never held at once); returns the corpus ids,
    queries, qrels by split and the file each split came from."""
    corpus_ids = msmarco.write_collection_parquet(root / "collection.tsv", corpus_out, ROW_GROUP_ROWS)
    qrels, origin = {}, {}
    for p in sorted(root.glob("qrels.*")):
        if p.suffix in (".tsv", ".txt"):
            split = msmarco_split(p)
            if split in origin:
                raise DataFormatError(p, f"split {split!r} already read from {Path(origin[split]).name}; "
                                         "keep one qrels file per split in the directory")
            qrels[split] = msmarco.read_qrels_frame(p)
            origin[split] = str(p)
    return corpus_ids, _msmarco_queries(root), qrels, origin


def _msmarco_queries(root: Path) -> pd.DataFrame:
    """Every ``queries.*.tsv``, a query read once where several files hold it with the same text.

    MS MARCO ships subsets beside their sets (``queries.dev.small.tsv`` in ``queries.dev.tsv``, the same for eval);
    one id with two different texts is an error naming both places.
    """
    files = sorted(root.glob("queries.*.tsv"))
    if not files:
        raise DataFormatError(root, "no queries.<split>.tsv file")
    frames = [msmarco.read_queries_frame(p).assign(_file=i) for i, p in enumerate(files)]
    queries = pd.concat(frames, ignore_index=True).drop_duplicates([QUERY_ID, TEXT]).reset_index(drop=True)
    dup = queries[QUERY_ID].duplicated()
    if dup.any():
        second = queries[dup].iloc[0]
        qid = second[QUERY_ID]
        first = queries[queries[QUERY_ID] == qid].iloc[0]
        a, b = files[first["_file"]], files[second["_file"]]
        line_a, line_b = msmarco.line_of_id(a, qid)[0], msmarco.line_of_id(b, qid)[0]
        raise DataFormatError(b, f"query id {qid!r} appears in more than one queries.*.tsv file with different "
                                 f"text (first at {a}:{line_a})", line=line_b)
    return queries.drop(columns="_file")


def _id_set(ids) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        return ids.combine_chunks()
    return pa.array(np.asarray(ids, dtype=object), pa.string())


def _check_references(qrels: pd.DataFrame, path: str, query_ids: pa.Array, corpus_ids: pa.Array) -> None:
    if qrels.empty:
        raise DataFormatError(path, "split has no judgements (empty split)")
    for col, ids, what in ((QUERY_ID, query_ids, "query"), (DOC_ID, corpus_ids, "document")):
        known = pd.Series(pc.is_in(_id_set(qrels[col]), value_set=ids).to_numpy(zero_copy_only=False))
        if not known.all():
            i = int((~known).to_numpy().argmax())
            bad = qrels[col].iloc[i]
            line = _line_of(path, qrels.iloc[i])
            raise DataFormatError(path, f"unknown {what} id {bad!r} (not in the {'queries' if what == 'query' else 'corpus'})",
                                  line=line)


def _line_of(path: str, row) -> int | None:
    """Find the line of a qrels row (only on the error path, so re-reading the file is fine)."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            # Match by column, as the readers split: BEIR ``qid<TAB>did<TAB>score``, TREC ``qid iter did grade``.
            # (Matching tokens anywhere finds wrong lines with numeric ids, e.g. a grade equal to a qid.)
            parts = [p.strip() for p in line.rstrip("\r\n").split("\t")]
            if len(parts) != 3:
                parts = line.split()
            did = parts[1] if len(parts) == 3 else parts[2] if len(parts) == 4 else None
            if did is not None and parts[0] == row[QUERY_ID] and did == row[DOC_ID]:
                return n
    return None


@dataclass
class PrepareOptions:
    dev_fraction: float = 0.1
    dev_seed: int = 0

    def as_dict(self) -> dict:
        return {"dev_fraction": self.dev_fraction, "dev_seed": self.dev_seed}


@dataclass
class PreparedDataset:
    """A converted dataset: Parquet tables plus ``manifest.json`` in one directory."""

    root: Path
    manifest: dict = field(repr=False)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "PreparedDataset":
        root = Path(root)
        mf = root / MANIFEST
        if not mf.is_file():
            raise TasbRayError(f"{root}: not a prepared dataset (no {MANIFEST}); run 'tasb-ray prepare-data'")
        return cls(root, json.loads(mf.read_text()))

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def splits(self) -> list[str]:
        return sorted(self.manifest["counts"]["splits"])

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.parquet"

    def corpus(self, columns: list[str] | None = None) -> pd.DataFrame:
        """``doc_id, text`` in corpus order (pass ``columns`` for others, e.g. the ``row`` id column)."""
        return pd.read_parquet(self.corpus_path, columns=list(columns or (DOC_ID, TEXT)))

    def table_sha256(self, name: str) -> str:
        """sha256 of one Parquet table of this cache (``corpus.parquet``, ``queries.parquet``), from the manifest
        when it has it (format 2), else computed."""
        recorded = self.manifest.get("tables", {}).get(name, {}).get("sha256")
        return recorded or sha256_file(self.root / name)

    def qrels(self, split: str) -> pd.DataFrame:
        if split not in self.manifest["counts"]["splits"]:
            raise TasbRayError(f"{self.root}: no split {split!r}; available: {', '.join(self.splits)}")
        return pd.read_parquet(self.root / "qrels" / f"{split}.parquet")

    def queries(self, split: str | None = None) -> pd.DataFrame:
        q = pd.read_parquet(self.root / "queries.parquet")
        if split is None:
            return q
        ids = set(self.qrels(split)[QUERY_ID])
        return q[q[QUERY_ID].isin(ids)].reset_index(drop=True)


def _cache_key(src: Source, opts: PrepareOptions) -> str:
    ident = json.dumps({"kind": src.kind, "location": src.location, **opts.as_dict(), "v": FORMAT_VERSION},
                       sort_keys=True)
    return f"{src.name}-{hashlib.sha256(ident.encode()).hexdigest()[:8]}"


def _source_sha256(path: str) -> str:
    try:
        return sha256_file(path)
    except PermissionError:
        raise DataFormatError(path, "permission denied") from None


def stale_reason(manifest: dict, src: Source) -> str | None:
    """Why the cache no longer matches its source files, or None when it does.

    Keyed by content: every file's sha256 is compared on every reuse. Size and mtime only short-cut the
    'changed' answer: an edit that keeps the size and restores the mtime (``touch -r``, ``cp -p``, an rsync
    or checkout of an older copy) leaves both equal. Hashing is cheap next to what a stale cache costs
    (measured: SciFact's 8.3 MB in 7 ms, NFCorpus's 9.6 MB in 12 ms).
    """
    recorded = manifest.get("source", {}).get("files", {})
    current = _file_fingerprints(src)
    if set(recorded) != set(current):
        added, removed = sorted(set(current) - set(recorded)), sorted(set(recorded) - set(current))
        return "source files " + "; ".join(
            x for x in (f"added: {', '.join(added)}" if added else "",
                        f"removed: {', '.join(removed)}" if removed else "") if x)
    for rel, cur in current.items():
        rec = recorded[rel]
        if rec.get("bytes") != cur["bytes"]:
            return f"source {cur['path']} changed: size {rec.get('bytes')} -> {cur['bytes']} bytes"
        if rec.get("sha256") != _source_sha256(cur["path"]):
            return f"source {cur['path']} changed: sha256 differs"
    return None


def prepare_dataset(dataset: str, cache_dir: str | os.PathLike | None = None, options: PrepareOptions | None = None,
                    force: bool = False, log: Callable[[str], None] = lambda s: None) -> PreparedDataset:
    """Convert ``dataset`` to Parquet in the cache (once) and return it."""
    opts = options or PrepareOptions()
    src = resolve_source(dataset)
    datasets = cache_root(cache_dir) / "datasets"
    root = datasets / _cache_key(src, opts)
    if not Path(os.path.normpath(root)).is_relative_to(os.path.normpath(datasets)):
        raise TasbRayError(f"dataset {dataset!r}: its cache {os.path.normpath(root)} would lie outside {datasets}")
    if not force and (root / MANIFEST).is_file():
        ds = PreparedDataset.open(root)
        if ds.manifest.get("format_version") != FORMAT_VERSION:
            reason = f"cache format {ds.manifest.get('format_version')} is not {FORMAT_VERSION}"
        else:
            reason = stale_reason(ds.manifest, src)
        if reason is None:
            log(f"cache hit: {root}")
            return ds
        log(f"rebuilding {root}: {reason}")

    with atomic_dir(root) as tmp:
        manifest = _convert(src, opts, tmp, log)
    log(f"prepared {src.name}: {manifest['counts']['corpus']} passages, {manifest['counts']['queries']} queries, "
        "splits " + ", ".join(f"{s}={v['queries']}q/{v['qrels']}j" for s, v in manifest["counts"]["splits"].items()))
    return PreparedDataset.open(root)


def _convert(src: Source, opts: PrepareOptions, tmp: Path, log=print) -> dict:
    """Read, validate and write the cache tables into ``tmp``; returns the manifest (written last)."""
    corpus = None
    if src.kind == "msmarco":
        corpus_ids, queries, qrels, origin = _load_msmarco(Path(src.location), tmp / "corpus.parquet")
    else:
        corpus, queries, qrels, origin = _load_source(src)
        corpus_ids = _id_set(corpus[DOC_ID])
    if not len(corpus_ids):
        raise DataFormatError(origin.get("corpus", src.location), "corpus is empty")
    query_ids, corpus_ids = _id_set(queries[QUERY_ID]), _id_set(corpus_ids)
    for split, table in qrels.items():
        _check_references(table, origin[split], query_ids, corpus_ids)
    if not qrels:
        raise TasbRayError(f"{src.location}: no qrels found (no splits)")

    carved_from = None
    dropped: dict[str, int] = {}
    if "dev" not in qrels and "train" in qrels:
        exclude = set(qrels["test"][QUERY_ID]) if "test" in qrels else set()
        overlap = len(exclude & set(qrels["train"][QUERY_ID]))
        if overlap:
            # Kept out of train and dev so that nothing tuned or trained on is a test query.
            log(f"warning: {origin['train']}: {overlap} training queries are also in 'test'; "
                "dropped from train (and from the dev carve)")
            dropped["train_queries_also_in_test"] = overlap
        try:
            qrels["train"], qrels["dev"] = carve_dev(qrels["train"], opts.dev_fraction, opts.dev_seed, exclude)
        except ValueError as e:
            raise TasbRayError(f"{origin['train']}: {e}") from None
        carved_from = "train"
    if "test" in qrels:
        test_q = set(qrels["test"][QUERY_ID])
        for split in ("train", "dev"):
            if split in qrels and not test_q.isdisjoint(qrels[split][QUERY_ID]):
                n = len(test_q & set(qrels[split][QUERY_ID]))
                raise DataFormatError(origin[split] if split in origin else src.location,
                                      f"{n} queries of split {split!r} are also in 'test'")

    fingerprints = _file_fingerprints(src)
    for info in fingerprints.values():
        info["sha256"] = _source_sha256(info["path"])
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": src.name,
        "source": {"kind": src.kind, "location": src.location, "files": fingerprints},
        "options": opts.as_dict(),
        "dev_carved_from": carved_from,
        "dropped": dropped,
        "passage_text": "title + ' ' + text where a title exists",
        "counts": {
            "corpus": len(corpus_ids),
            "queries": len(queries),
            "splits": {s: {"queries": int(t[QUERY_ID].nunique()), "qrels": len(t)} for s, t in sorted(qrels.items())},
        },
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if corpus is not None:
        corpus = corpus.reset_index(drop=True)
        corpus[ROW] = np.arange(len(corpus), dtype=np.int64)
        # Row groups bound what one reader holds and let Ray Data read (and skip, by ``row``) in parallel.
        corpus.to_parquet(tmp / "corpus.parquet", index=False, row_group_size=ROW_GROUP_ROWS)
    queries.to_parquet(tmp / "queries.parquet", index=False)
    (tmp / "qrels").mkdir()
    for split, table in qrels.items():
        table.to_parquet(tmp / "qrels" / f"{split}.parquet", index=False)
    manifest["tables"] = {name: {"sha256": sha256_file(tmp / name)} for name in ("corpus.parquet", "queries.parquet")}
    # The manifest is written last: its presence is what marks a cache complete.
    write_json(tmp / MANIFEST, manifest)
    return manifest
