"""The typed configuration of one TAS-Balanced training run (``tasb-ray train CONFIG.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tasb_ray.config import check_range
from tasb_ray.data.irds import split_spec
from tasb_ray.errors import ConfigError
from tasb_ray.losses.combined import uses_inbatch
from tasb_ray.retrieval.ann import check_index_choice
from tasb_ray.teachers.config import TeacherConfig
from tasb_ray.teachers.vector_store import DEFAULT_VECTOR_DTYPE, check_vector_dtype
from tasb_ray.training.loss_balance import INBATCH_SCALES
from tasb_ray.training.pairs import positive_grade_rule
from tasb_ray.training.sampling import SamplerConfig

DEFAULT_DATASET = "scifact"
TEACHER_FILE = "teacher-file"


@dataclass
class DataConfig:
    """Which dataset and splits. Model choices use ``dev_split``; ``test_split`` is reported only.

    ``irds_splits`` names each split as its own ir_datasets id over one docs store, e.g.
    ``{train: irds:msmarco-passage/train/judged, dev: irds:msmarco-passage/dev/small}``, in place of ``dataset``
    (which is then set to the equivalent ``irds:train=...;dev=...`` name). A missing dev split is carved from train.
    """

    dataset: str = DEFAULT_DATASET
    cache_dir: str | None = None
    dev_fraction: float = 0.1
    dev_seed: int = 0
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    rel_level: int = 1
    irds_splits: dict[str, str] | None = None

    def __post_init__(self):
        # The carve keeps at least one query on each side, so both ends are open.
        check_range("dev_fraction", self.dev_fraction, 0, 1, low_open=True, high_open=True)
        check_range("dev_seed", self.dev_seed, 0, integer=True)
        check_range("rel_level", self.rel_level, 1, integer=True)
        if self.irds_splits is None:
            return
        spec = "irds:" + split_spec(self.irds_splits)
        if self.dataset not in (DEFAULT_DATASET, spec):
            raise ConfigError(f"dataset: set dataset or irds_splits, not both (dataset is {self.dataset!r})")
        if self.train_split not in self.irds_splits:
            raise ConfigError(f"irds_splits: no {self.train_split!r} split (train_split); "
                              f"has {', '.join(sorted(self.irds_splits))}")
        if self.dev_split not in self.irds_splits and self.dev_split != "dev":
            raise ConfigError(f"irds_splits: no {self.dev_split!r} split (dev_split); only 'dev' is carved from train")
        self.dataset = spec


@dataclass
class CandidatesConfig:
    """First-stage candidates that supply the negatives of each training query, and which judged documents are positives.

    ``sources: [teacher-file]`` takes the triples and scores of the pairwise teacher's file as they are (the paper's
    MS MARCO setting: the authors' file, no retrieval); the other fields are then unused.
    ``positive_grade``: None takes every grade > 0; an integer N takes grades >= N; ``max`` takes only each query's
    highest grade. ``max_positives`` keeps that many positives per query (highest grade first), then
    ``max_pairs_per_query`` caps each query's positive x negative triples by a uniform draw. See
    :func:`tasb_ray.training.pairs.build_triples`. Both new options leave the pairs stage's cache key unchanged
    while unset.
    """

    sources: list[str] = field(default_factory=lambda: ["bm25"])
    depth: int = 100
    negatives_per_query: int = 16
    max_positives: int | None = None
    seed: int = 0
    positive_grade: int | str | None = None
    max_pairs_per_query: int | None = None

    @property
    def from_teacher_file(self) -> bool:
        return self.sources == [TEACHER_FILE]

    def __post_init__(self):
        positive_grade_rule(self.positive_grade)
        check_range("max_pairs_per_query", self.max_pairs_per_query, 1, integer=True, allow_none=True)
        if self.sources == [TEACHER_FILE]:
            return
        bad = [s for s in self.sources if s not in ("bm25", "dense")]
        if bad or not self.sources:
            raise ConfigError(f"sources: expected a non-empty list of bm25/dense, or [{TEACHER_FILE}] alone, "
                              f"got {self.sources}")
        check_range("depth", self.depth, 1, integer=True)
        check_range("negatives_per_query", self.negatives_per_query, 1, integer=True)
        check_range("max_positives", self.max_positives, 1, integer=True, allow_none=True)
        check_range("seed", self.seed, 0, integer=True)


@dataclass
class ClustersConfig:
    """Topic clusters of the training queries (k-means on baseline-encoder embeddings).

    ``encoder=None`` uses the student's initial weights, as the paper does.
    """

    k: int = 20
    encoder: str | None = None
    niter: int = 20
    seed: int = 0

    def __post_init__(self):
        check_range("k", self.k, 1, integer=True)
        check_range("niter", self.niter, 1, integer=True)
        check_range("seed", self.seed, 0, integer=True)


def _default_pairwise() -> TeacherConfig:
    return TeacherConfig.from_dict({"kind": "ensemble", "components": [
        {"kind": "bm25"}, {"kind": "bi-encoder", "model": "minilm-l6", "similarity": "cosine"}]})


@dataclass
class TeachersConfig:
    """``pairwise``: scores the (q, p+, p-) triples once, offline. ``inbatch``: scores the batch's B x 2B matrix.

    ``inbatch_scale`` (see :mod:`tasb_ray.training.loss_balance`): ``raw`` (the in-batch teacher's own scores; an
    ensemble's members summed without normalisation), ``zscore`` (each query row z-normalised; for an ensemble its
    members each, which is the behaviour before this option), ``match-pairwise`` (the z-scores times one factor
    that makes the in-batch margins' sd equal the pairwise margins' sd on a fixed calibration sample) or
    ``match-loss`` (default: the z-scores times one factor that makes ``0.75 * L_inb = L_pair`` on that sample at the
    student's initial weights, 0.75 being the paper's alpha, so that alpha weighs two terms of one range, as in the
    paper; measured in ``benchmarks/results/loss_balance.md``).

    ``vector_dtype``: how bi-encoder members (of either role) store the teacher-vectors stage's vectors they
    memory-map: ``float32`` (default; the encoder's output exactly) or ``float16`` (half the file, 6.8 GB for MS MARCO
    at 384 dimensions; scores within ~4 * 2^-11 * |q| * |p| of float32's). See
    :mod:`tasb_ray.pipeline.teacher_vectors`; measured in ``benchmarks/results/inbatch_memory.md``.
    """

    pairwise: TeacherConfig = field(default_factory=_default_pairwise)
    inbatch: TeacherConfig | None = field(default_factory=_default_pairwise)
    inbatch_scale: str = "match-loss"
    vector_dtype: str = DEFAULT_VECTOR_DTYPE

    def __post_init__(self):
        if self.inbatch_scale not in INBATCH_SCALES:
            raise ConfigError(f"inbatch_scale must be one of {list(INBATCH_SCALES)}, got {self.inbatch_scale!r}")
        check_vector_dtype(self.vector_dtype)


@dataclass
class StudentConfig:
    """The BERT-DOT student. ``score_scale`` multiplies dot products so normalised vectors can match teacher margins.

    ``reinit_top_layers`` N > 0 re-initialises the top N transformer layers with the model's own ``_init_weights``
    before training, so the student must learn its representations from the teachers (the paper started from
    DistilBERT, not from a trained retriever). The draw uses a seed derived from the run's ``seed`` only, so every
    arm of a seed (sampling, alpha, ...) starts from the same weights. Clusters still use the pretrained encoder.
    """

    model: str = "minilm-l6"
    pooling: str = "auto"
    normalize: bool | None = None
    query_max_len: int = 30
    passage_max_len: int = 200
    attention_dropout: float | None = 0.0
    score_scale: float = 1.0
    reinit_top_layers: int = 0

    def __post_init__(self):
        check_range("reinit_top_layers", self.reinit_top_layers, 0, integer=True)
        if self.pooling not in ("auto", "cls", "mean"):
            raise ConfigError(f"pooling: must be auto, cls or mean, got {self.pooling!r}")
        check_range("query_max_len", self.query_max_len, 1, integer=True)
        check_range("passage_max_len", self.passage_max_len, 1, integer=True)
        check_range("attention_dropout", self.attention_dropout, 0, 1, high_open=True, allow_none=True)
        check_range("score_scale", self.score_scale, 0, low_open=True)


@dataclass
class OptimConfig:
    """AdamW (weight_decay 0 is the paper's Adam) with warm-up then linear / cosine / constant schedule."""

    lr: float = 7e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "linear"
    max_steps: int | None = None
    epochs: float | None = None
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    amp: bool = True

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ConfigError(f"schedule must be linear, cosine or constant, got {self.schedule!r}")
        if self.max_steps is not None and self.epochs is not None:
            raise ConfigError("set max_steps or epochs, not both")
        if self.max_steps is None and self.epochs is None:
            self.epochs = 1.0
        check_range("lr", self.lr, 0, low_open=True)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("warmup_steps", self.warmup_steps, 0, integer=True)
        # 0 trains nothing: the sweep's untrained reference evaluates the student as it starts.
        check_range("max_steps", self.max_steps, 0, integer=True, allow_none=True)
        check_range("epochs", self.epochs, 0, low_open=True, allow_none=True)
        # 0 would clip every gradient to nothing; null turns clipping off.
        check_range("grad_clip", self.grad_clip, 0, low_open=True, allow_none=True)
        check_range("grad_accum", self.grad_accum, 1, integer=True)


@dataclass
class EvalConfig:
    """Dense retrieval over the full corpus; ``every`` > 0 evaluates dev every so many steps (best kept).

    The corpus index: ``index`` is ``flat`` (exact), ``ivf-pq``, ``hnsw-fp16`` or ``auto`` (flat while the corpus's
    float32 vectors fit ``index_memory_gb``, else IVF-PQ; see :mod:`tasb_ray.retrieval.ann`); ``nprobe`` overrides
    IVF-PQ's lists per query. A corpus of at least ``ray_min_passages`` passages is encoded on Ray Data (sharded,
    resumable, :func:`tasb_ray.distributed.encode.encode_corpus`) instead of in the trainer's process.
    """

    every: int = 0
    metric: str = "nDCG@10"
    metrics: list[str] = field(default_factory=lambda: ["nDCG@10", "MRR@10", "R@100", "R@1000"])
    k: int = 1000
    batch_size: int = 64
    test: bool = True
    at_start: bool = False
    index: str = "flat"
    index_memory_gb: float = 4.0
    nprobe: int | None = None
    ray_min_passages: int = 1_000_000

    def __post_init__(self):
        check_range("every", self.every, 0, integer=True)
        check_range("k", self.k, 1, integer=True)
        check_range("batch_size", self.batch_size, 1, integer=True)
        check_index_choice(self.index, "index")
        check_range("index_memory_gb", self.index_memory_gb, 0, low_open=True)
        check_range("nprobe", self.nprobe, 1, integer=True, allow_none=True)
        check_range("ray_min_passages", self.ray_min_passages, 0, integer=True)
        from tasb_ray.evaluation.metrics import check_metric_names

        check_metric_names(self.metrics, "metrics")
        if self.every and self.metric not in self.metrics:
            # Best-model selection reads this metric from each dev evaluation.
            raise ConfigError(f"metric: {self.metric!r} is not among metrics {list(self.metrics)}")


@dataclass
class TrainingConfig:
    """Everything one run needs. ``seed`` drives the batch plan, dropout and init; shared stages use their own seeds."""

    name: str = "tasb"
    seed: int = 0
    output_dir: str | None = None
    work_dir: str | None = None
    alpha: float = 0.75
    data: DataConfig = field(default_factory=DataConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    clusters: ClustersConfig = field(default_factory=ClustersConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log_every: int = 10
    checkpoint_every: int = 50
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        check_range("alpha", self.alpha, 0)
        check_range("seed", self.seed, 0, integer=True)
        if self.candidates.from_teacher_file and self.teachers.pairwise.kind != "file":
            raise ConfigError(f"candidates.sources [{TEACHER_FILE}] needs teachers.pairwise of kind 'file' "
                              f"(its path is the triples file), not {self.teachers.pairwise.kind!r}")
        if uses_inbatch(self.alpha) and self.teachers.inbatch is None:
            raise ConfigError("alpha > 0 needs teachers.inbatch")
        if self.sampler.seed not in (0, self.seed):
            raise ConfigError("sampler.seed: set the top-level 'seed' instead (the sampler follows it)")
        self.sampler = dataclasses.replace(self.sampler, seed=self.seed)
        d = self.data
        if d.irds_splits is not None and self.eval.test and d.test_split not in d.irds_splits:
            raise ConfigError(f"data.irds_splits: no {d.test_split!r} split (test_split); add one or set eval.test: false")
        check_range("log_every", self.log_every, 1, integer=True)
        check_range("checkpoint_every", self.checkpoint_every, 1, integer=True)
