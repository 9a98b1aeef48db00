"""Typed parameters: every knob of the pipeline, its type and its constraints.

`params.yaml` is what DVC tracks and holds every value — the one place defaults live (no field here
has a default of its own, so the two cannot drift); this module turns it into validated, typed
objects so a typo, a missing key or a wrong type fails loudly before any stage runs.
"""

from __future__ import annotations

import difflib
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metarec_tasks.errors import ConfigError

PARAMS_FILE = "params.yaml"
WAREHOUSE_URL_ENV = "METAREC_WAREHOUSE_URL"


class _Strict(BaseModel):
    """Unknown keys, wrong types and non-finite numbers (`.inf`, `.nan`) are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RunParams(_Strict):
    run_date: date
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    threads: int = Field(ge=1)  # intra-op threads per process (metarec_tasks/threads.py)
    lock_timeout_s: float = Field(ge=0)  # wait for another stage in the workspace (metarec_tasks/lock.py)

    @property
    def run_id(self) -> str:
        """One run per logical day: re-running a day replaces that day's published rows."""
        return f"nightly-{self.run_date.isoformat()}"


SourceKind = Literal["synthetic", "landing", "movielens"]


class SourceParams(_Strict):
    kind: SourceKind
    history_days: int = Field(ge=1)
    landing_dir: str
    read_chunk_rows: int = Field(ge=1)
    movielens_dir: str


class SyntheticParams(_Strict):
    start_date: date
    initial_users: int = Field(ge=1)
    new_users_per_day: int = Field(ge=0)
    initial_items: int = Field(ge=1)
    new_items_per_day: int = Field(ge=0)
    daily_active_share: float = Field(gt=0, le=1)
    events_per_active_user: float = Field(gt=0)
    new_user_events: float = Field(gt=0)
    latent_dim: int = Field(ge=1)
    feature_signal: float = Field(ge=0, le=1)
    zipf_exponent: float = Field(ge=0)
    taste_temperature: float = Field(ge=0)
    rating_noise: float = Field(ge=0)
    bad_row_share: float = Field(ge=0, lt=1)
    implicit_per_rating: float = Field(ge=0)  # mean implicit events (view/click/purchase) per rating
    unavailable_share: float = Field(ge=0, lt=1)  # items whose side-table `available` is false


FeatureKind = Literal["categorical", "multi_hot", "text"]


class FeatureSpec(_Strict):
    name: str
    kind: FeatureKind


class FeatureParams(_Strict):
    user: list[FeatureSpec]
    item: list[FeatureSpec]


class ValidateParams(_Strict):
    event_types: list[str]
    rating_min: float
    rating_max: float
    id_pattern: str
    max_bad_row_share: float = Field(ge=0, le=1)
    min_rows: int = Field(ge=0)
    allow_empty_days: bool
    max_lateness_hours: float = Field(ge=0)
    volume_window_days: int = Field(ge=1)
    volume_min_history_days: int = Field(ge=1)
    volume_min_ratio: float = Field(ge=0)
    volume_max_ratio: float = Field(gt=0)
    chunk_rows: int = Field(ge=1)


class EpisodeParams(_Strict):
    query_size: int = Field(ge=1)
    min_support: int = Field(ge=1)
    max_support: int = Field(ge=1)
    holdout_share: float = Field(gt=0, lt=1)
    validation_share: float = Field(ge=0, lt=1)
    new_entity_days: int = Field(ge=0)
    text_batch_size: int = Field(ge=1)  # texts encoded at once (features of kind text)


class ModelParams(_Strict):
    embedding_dim: int = Field(ge=1)
    hidden: list[int]
    item_id_embedding: bool


Algorithm = Literal["maml", "fomaml", "mamlpp", "metasgd", "reptile", "ridge"]
AdaptGroup = Literal["mlp", "head", "all"]


class MetaParams(_Strict):
    """One model's meta-learning knobs: the rating model's `meta`, the ranker's `ranking.meta`."""

    algorithm: Algorithm
    adapt: AdaptGroup
    inner_steps: int = Field(ge=1)
    inner_lr: float = Field(gt=0)
    meta_lr: float = Field(gt=0)
    meta_batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)  # epochs without validation improvement before stopping...
    patience_tasks: int = Field(ge=0)  # ...or this many training tasks, whichever comes first; 0 = off
    pretrain_epochs: int = Field(ge=0)
    pretrain_batch_size: int = Field(ge=1)
    support_subsample: bool
    first_order_epochs: int = Field(ge=0)  # MAML++ derivative-order annealing
    multi_step_loss_epochs: int = Field(ge=0)  # MAML++ multi-step loss annealing
    ridge_lambda: float = Field(gt=0)  # ridge: the closed-form inner loop's starting λ (then learned)
    weight_average_decay: float = Field(ge=0, lt=1)  # model averaging: EMA decay per step; 0 = off
    amp: bool  # bfloat16 autocast on CUDA; ignored on CPU
    checkpoint_every: int = Field(ge=1)  # epochs between checkpoints (models/checkpoints/<model>)
    tasks_per_epoch: int = Field(ge=0)  # a fresh random sample of this many training tasks per epoch; 0 = all


class RatingMetaParams(MetaParams):
    """The rating model's block adds the warm start from the champion (publish keeps the champion)."""

    warm_start: bool  # start from the champion model instead of from scratch
    champion_model: str  # where publish keeps the champion (workspace-relative)
    baseline_batch_size: int = Field(ge=1)  # the pretrained non-meta baseline's minibatch rows...
    baseline_lr: float = Field(gt=0)  # ...and Adam learning rate (its epochs and patience: the block's)


RankingObjective = Literal["rating", "ranking", "both"]
RankingLoss = Literal["softmax", "bpr"]
RankingPrior = Literal["none", "ease"]


SupportSizes = Literal["uniform", "log_uniform"]  # log_uniform: as many 1–3 as 8–30 item episodes


class RankingParams(_Strict):
    """The top-K objective (metarec_tasks/ranking): what is trained, and how it becomes the published score.

    `objective`: rating (the published score is the predicted rating), ranking (the ranking model's
    score), both (ranking score + `rating_weight` x the predicted rating's deviation from the mean).
    """

    objective: RankingObjective
    event_weights: dict[str, float]  # positive weight of each event type (0 or absent: ignored)
    loss: RankingLoss  # sampled softmax with logQ correction, or BPR
    negatives: int = Field(ge=1)  # sampled negatives per task (support and query alike)
    negative_alpha: float = Field(ge=0)  # negatives ~ popularity^alpha (0: uniform)
    dim: int = Field(ge=1)  # user/item representation size (score = dot product + item bias)
    prior: RankingPrior  # ease: + a per-user weight x the EASE score of the support (ranking/prior.py)
    prior_weight: float  # the per-user prior weight's starting value (the prior is scaled to unit std)
    prior_folds: int = Field(ge=2)  # cross-fitting folds of the training users' prior
    meta: MetaParams  # the ranker's meta-learning block (the same keys as the top-level `meta`)
    max_support: int = Field(ge=1)  # support interactions of a meta-training episode, at most
    support_sizes: SupportSizes  # how an episode's support size is drawn from 1..max_support
    max_query: int = Field(ge=1)  # query positives of a meta-training episode, at most
    rating_weight: float = Field(ge=0)  # objective=both: weight of the rating term
    max_catalog_items: int = Field(ge=1)  # above this, score a candidate pool instead
    pool_popular: int = Field(ge=0)  # candidate pool: most popular items...
    pool_recent: int = Field(ge=0)  # ...plus the most recently first-seen items

    @field_validator("meta")
    @classmethod
    def _rankable(cls, meta: MetaParams) -> MetaParams:
        if meta.adapt == "all":
            raise ValueError("ranking.meta.adapt must be head or mlp: the item table is shared by every user")
        if meta.support_subsample:
            raise ValueError(
                "ranking.meta.support_subsample must be false: ranking episodes already draw support sizes"
            )
        return meta


class SelectionParams(_Strict):
    """The night's top-K candidates and their blend, every choice made on validation users."""

    ease_lambdas: list[float] = Field(min_length=1)
    ease_max_items: int = Field(ge=1)
    ease_dropout_kappas: list[Annotated[float, Field(gt=0)]]  # [] = no `ease_dropout` candidate
    low_rating_weights: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=1)
    prior_scales: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)  # a ranker's prior term × this
    knn_neighbors: list[int] = Field(min_length=1)
    mf_dims: list[int] = Field(min_length=1)
    mf_regs: list[float] = Field(min_length=1)
    transfer_inner_lrs: list[float] = Field(min_length=1)
    blend: bool
    blend_weights: list[float] = Field(min_length=1)
    blend_rounds: int = Field(ge=1)
    min_bucket_users: int = Field(ge=1)


class DistillParams(_Strict):
    """The student (`selection/distill.py`): a two-tower net trained on training users to rank the
    catalog like the night's challenger; its temperature and epochs are chosen on validation users."""

    enabled: bool
    dim: int = Field(ge=1)
    temperatures: list[float] = Field(min_length=1)
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    lr: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    draws: int = Field(ge=1)  # support sets per training user, each scored once by the teacher
    top_n: int = Field(ge=1)  # the teacher's top items per support set...
    sampled: int = Field(ge=0)  # ...plus uniformly sampled items
    max_users: int = Field(ge=0)  # lessons from at most this many training users a night; 0 = all

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(t <= 0 for t in value):
            raise ValueError(f"temperatures must be positive, got {value}")
        return value


class FinetuneParams(_Strict):
    inner_steps: int = Field(ge=0)
    chunk_size: int = Field(ge=1)
    top_k: int = Field(ge=1)
    shards: int = Field(ge=1)  # user shards of the published top-K (personalization/shards.py)


class EvaluateParams(_Strict):
    primary_metric: str
    ndcg_ks: list[int]
    binary_k: int = Field(ge=1)
    binary_relevant: int = Field(ge=1)
    catalog_k: int = Field(ge=1)
    relevance_threshold: float
    shrinkage: float = Field(ge=0)
    gate_baselines: list[str]
    # top-K baselines (holdout_topk.parquet) the published model must beat on catalog_recall@catalog_k
    catalog_gate_baselines: list[str]

    @model_validator(mode="after")
    def _known_metric(self) -> EvaluateParams:
        known = metric_names(self)
        if self.primary_metric not in known:
            raise ValueError(
                f"evaluate.primary_metric {self.primary_metric!r} is not a metric the evaluate stage "
                f"computes with evaluate.ndcg_ks={self.ndcg_ks}, evaluate.binary_k={self.binary_k} and "
                f"evaluate.catalog_k={self.catalog_k}; choose from {known}"
            )
        return self


# Stems of the metrics at a cut-off; the full names are `<stem>@<k>` (see `metric_names`).
BINARY_METRIC_STEMS = ("bin_ndcg", "precision", "recall", "mrr")
CATALOG_METRIC_STEMS = ("catalog_recall", "catalog_ndcg")


def metric_names(ep: EvaluateParams) -> list[str]:
    """Exactly the per-predictor metrics the evaluate stage computes, in report order: the one list
    that the primary-metric check, the report and the run summary use.

    Rating error on the query items; graded nDCG at each of `ndcg_ks`; the binary protocol at
    `binary_k` (`evaluation.tables.per_user_scores`); full-catalog top-K at `catalog_k`
    (`evaluation.tables.per_user_catalog`).
    """
    return [
        "mae",
        "rmse",
        *(f"ndcg@{k}" for k in dict.fromkeys(ep.ndcg_ks)),
        *(f"{stem}@{ep.binary_k}" for stem in BINARY_METRIC_STEMS),
        *(f"{stem}@{ep.catalog_k}" for stem in CATALOG_METRIC_STEMS),
    ]


class PublishParams(_Strict):
    force: bool
    champion_tolerance: float = Field(ge=0)
    warehouse_url: str  # `{source}` stands for source.kind: the demo never shares real data's warehouse
    connect_timeout_s: float = Field(gt=0)
    statement_timeout_s: float = Field(gt=0)
    run_page_users: int = Field(ge=0)  # users whose top items reports/run.html shows
    run_page_items: int = Field(ge=1)  # items shown per such user

    def url_for(self, root: Path, source: str) -> str:
        """The warehouse URL for a workspace and source: the environment wins (production credentials
        never live in params.yaml), and a relative SQLite path is taken relative to the workspace,
        not to whichever directory the caller happens to run in."""
        url = (os.environ.get(WAREHOUSE_URL_ENV) or self.warehouse_url).replace("{source}", source)
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            return prefix + str((Path(root) / url.removeprefix(prefix)).resolve())
        return url


class AlertParams(_Strict):
    """Where alerts go (metarec_tasks/orchestration/alerts.py); an empty host: the task log only."""

    smtp_host: str
    smtp_port: int = Field(ge=1, le=65535)
    sender: str
    recipients: list[str]
    timeout_s: float = Field(gt=0)


class OrchestrationParams(_Strict):
    schedule: str | None  # None: manual triggers only (a staging deployment, the topology test)
    default_queue: str
    gpu_queue: str
    shard_queue: str  # the queue of `recommend_shard`, finetune's user shards: the workers sharing them
    retries: int = Field(ge=0)
    retry_delay_minutes: float = Field(ge=0)
    task_timeout_minutes: dict[str, float]  # per task id, `default` for the rest

    @field_validator("task_timeout_minutes")
    @classmethod
    def _positive_with_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("needs a `default` entry (the timeout of every task not listed)")
        if any(minutes <= 0 for minutes in value.values()):
            raise ValueError(f"timeouts must be positive minutes, got {value}")
        return value

    def task_timeout(self, task_id: str) -> timedelta:
        return timedelta(minutes=self.task_timeout_minutes.get(task_id, self.task_timeout_minutes["default"]))


class Params(_Strict):
    run: RunParams
    source: SourceParams
    synthetic: SyntheticParams
    features: dict[str, FeatureParams]
    validate_: ValidateParams = Field(alias="validate")
    episodes: EpisodeParams
    model: ModelParams
    meta: RatingMetaParams
    finetune: FinetuneParams
    ranking: RankingParams
    selection: SelectionParams
    distill: DistillParams
    evaluate: EvaluateParams
    publish: PublishParams
    alerts: AlertParams
    orchestration: OrchestrationParams

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @field_validator("features")
    @classmethod
    def _unique_feature_names(cls, value: dict[str, FeatureParams]) -> dict[str, FeatureParams]:
        for source, spec in value.items():
            for side in (spec.user, spec.item):
                names = [f.name for f in side]
                if len(names) != len(set(names)):
                    raise ValueError(f"duplicate feature names for source {source}: {names}")
        return value

    @model_validator(mode="after")
    def _features_for_source(self) -> Params:
        if self.source.kind not in self.features:
            raise ValueError(f"params.yaml declares no features for source {self.source.kind!r}")
        return self

    @property
    def active_features(self) -> FeatureParams:
        """The feature declaration of the source this run reads."""
        return self.features[self.source.kind]


def load_params(path: Path | str = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    """Read params.yaml, apply dotted-key overrides (`{"meta.epochs": 3}`), and validate.

    Every way this can fail — a missing or unparsable file, an unknown key, a wrong value — is a
    `ConfigError` whose one line names the file and the key, and what is allowed instead."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date such as 2026-13-01
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return validated(raw, str(path))


def validated(raw: Any, where: str) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe(exc)}") from None


def describe(exc: ValidationError, most: int = 3) -> str:
    """Pydantic's errors as one line: `key: problem (got value)`, the first few."""
    parts = []
    for error in exc.errors()[:most]:
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        value = error.get("input")
        shown = error["type"] != "missing" and not isinstance(value, dict | list)  # a section: too long
        got = f" (got {value!r})" if shown else ""
        parts.append(f"{key}: {error['msg']}{got}")
    more = len(exc.errors()) - most
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree["a"]["b"] = value` for `dotted == "a.b"`, refusing keys that do not exist."""
    *parents, leaf = dotted.split(".")
    node = tree
    for depth, key in enumerate([*parents, leaf]):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(unknown_key(dotted, node, depth))
        if depth < len(parents):
            node = node[key]
    node[leaf] = value


def get_dotted(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for depth, key in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(unknown_key(dotted, node, depth))
        node = node[key]
    return node


def unknown_key(dotted: str, node: Any, depth: int) -> str:
    """`unknown parameter 'meta.epocs'; did you mean 'meta.epochs'?` (or the keys there are)."""
    parts = dotted.split(".")
    where = ".".join(parts[:depth])
    if not isinstance(node, dict):
        return f"unknown parameter {dotted!r}: {where} is a value, not a section"
    close = difflib.get_close_matches(parts[depth], list(node), n=1)
    prefix = f"{where}." if where else ""
    hint = f"did you mean '{prefix}{close[0]}'?" if close else f"keys there: {', '.join(map(str, node))}"
    return f"unknown parameter {dotted!r}; {hint}"


def update_params_file(path: Path | str, overrides: dict[str, Any]) -> bool:
    """Write overrides into params.yaml, keeping its comments; return whether anything changed.

    Only the lines of changed keys are rewritten, so DVC sees a change exactly when a value changed
    and the file stays readable for people.
    """
    path = Path(path)
    text = path.read_text()
    current = yaml.safe_load(text)
    changed = False
    lines = text.splitlines(keepends=True)
    for dotted, value in overrides.items():
        probe = yaml.safe_load(text)
        set_dotted(probe, dotted, value)  # raises on unknown keys
        if _plain(get_dotted(current, dotted)) == value:
            continue
        lines = _rewrite_line(lines, dotted, value)
        changed = True
    if changed:
        new_text = "".join(lines)
        validated(yaml.safe_load(new_text), str(path))  # never leave an invalid params.yaml behind
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(new_text)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of it
    return changed


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _rewrite_line(lines: list[str], dotted: str, value: Any) -> list[str]:
    """Replace the value of one `key: value  # comment` line inside its section."""
    parents = dotted.split(".")
    depth = 0
    out = list(lines)
    for i, line in enumerate(lines):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if indent != 2 * depth or not stripped.startswith(f"{parents[depth]}:"):
            continue
        if depth < len(parents) - 1:
            depth += 1
            continue
        rest = stripped[len(parents[depth]) + 1 :].rstrip("\n")
        value_part, hash_, comment = rest.partition("#")
        rendered = (
            '"' + value.replace('"', '\\"') + '"'
            if isinstance(value, str)
            else (yaml.safe_dump(value, default_flow_style=True).splitlines()[0])
        )
        if hash_:  # keep the comment in its column
            width = max(len(value_part) - 1, len(rendered) + 2)
            rendered = f"{rendered:<{width}}#{comment}"
        out[i] = " " * indent + f"{parents[depth]}: {rendered}\n"
        return out
    raise KeyError(f"parameter {dotted!r} not found as a plain line in params.yaml")
