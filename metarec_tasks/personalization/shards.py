"""The published top-K in user shards: the per-user work of `finetune` (adaptation and full-catalog
scoring of every active user — the part that grows with users) split over `finetune.shards`
processes, then merged into the one `recommendations.parquet` that `publish` writes in one
transaction.

Why shards are files outside DVC. DVC holds one repository lock per workspace, so shards as DVC
stages of one workspace would run one after another; and a laptop `dvc repro` must still produce the
whole list by itself. So a shard is the stage's own code run outside DVC (`metarec finetune-shard
INDEX`, what the DAG's mapped `recommend_shard` tasks run, under a *shared* workspace lock so that
shards run side by side but never beside a stage), writing `data/shards/<i>-of-<n>.parquet`
atomically — outside `data/predictions`, which DVC empties before the stage runs. The `finetune`
stage then computes every shard that is missing or stale itself and concatenates them in order.
With `finetune.shards: 1` and no DAG, that is the unsharded run.

Why a retried, duplicated or stale shard is harmless. A shard is a pure function of the stage's
inputs, its index and the shard count: shard i takes the i-th contiguous run of the user chunks
(`finetune.chunk_size`) that the unsharded loop would take, so every user is scored in the same
chunk as unsharded, and the merged rows are the unsharded rows, in the same order. Each file carries
a stamp: a hash of every file the stage depends on in `dvc.yaml` (data, models and code), all of
`params.yaml` and the night's selection (challenger, knobs, blend). The merge accepts a shard only
with its own stamp; any other is recomputed with a warning, never published as it is.

Each shard process also chooses the night's challenger on the validation users and distils it into
the student (it needs the selection to score): the per-user work is split, the selection is repeated
per shard task — it grows with the validation and training users, not with everyone active, and with
one shard no shard task runs at all (`orchestration.airflow_tasks.shard_tasks`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from metarec_tasks.files import atomic_path
from metarec_tasks.params import Params
from metarec_tasks.paths import PROJECT_ROOT, Workspace

log = logging.getLogger(__name__)

STAMP_KEY = b"metarec_shard_stamp"
STAGE = "finetune"
CODE = "metarec_tasks"  # deps under it are the running code's files
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    def span(self, users: int, chunk: int) -> range:
        """The positions of the users this shard scores: its contiguous share of the `chunk`-user
        chunks of the unsharded loop, so it starts on a chunk boundary and chunks as that loop does."""
        chunks = -(-users // chunk)
        base, extra = divmod(chunks, self.count)
        first = self.index * base + min(self.index, extra)
        size = base + (self.index < extra)
        return range(min(first * chunk, users), min((first + size) * chunk, users))

    def file(self, ws: Workspace) -> Path:
        return ws.shards / f"{self.index}-of-{self.count}.parquet"


def stamp(ws: Workspace, params: Params, selection: dict[str, Any]) -> str:
    """What a shard was computed from: the stage's `dvc.yaml` entry, every file it depends on, by
    content — data and models in the workspace, code as it runs (this package) — the whole params
    and the selection."""
    pipeline = ws.root / "dvc.yaml"  # the workspace's; an installed package has none beside it
    pipeline = pipeline if pipeline.exists() else PROJECT_ROOT / "dvc.yaml"
    spec = yaml.safe_load(pipeline.read_text())["stages"][STAGE]
    digest = hashlib.sha256()
    digest.update(json.dumps(spec, sort_keys=True).encode())
    digest.update(params.model_dump_json(by_alias=True).encode())
    digest.update(json.dumps(selection, sort_keys=True, default=float).encode())
    for dep in spec["deps"]:
        base = PROJECT_ROOT if dep.startswith(f"{CODE}/") else ws.root
        for path in _files(base / dep):
            digest.update(str(path.relative_to(base)).encode())
            with path.open("rb") as f:
                while block := f.read(HASH_CHUNK):
                    digest.update(block)
    return digest.hexdigest()


def _files(path: Path) -> Iterator[Path]:
    """A dependency's files in a stable order (a missing one hashes as nothing; DVC reports it)."""
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def write_shard(ws: Workspace, shard: Shard, rows: pd.DataFrame, stamped: str) -> Path:
    """The shard's rows with their stamp in the Parquet file's metadata, written atomically."""
    path = shard.file(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), STAMP_KEY: stamped.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_shard(ws: Workspace, shard: Shard, stamped: str) -> pd.DataFrame | None:
    """The shard's rows if its file exists and carries `stamped`; None when missing or stale."""
    path = shard.file(ws)
    if not path.is_file():
        return None
    try:
        found = (pq.read_schema(path).metadata or {}).get(STAMP_KEY, b"").decode()
    except (OSError, pa.ArrowException):  # a torn or foreign file: computed again
        found = ""
    if found != stamped:
        log.warning("finetune: shard file %s is stale (other inputs or selection): computing it", path.name)
        return None
    return pd.read_parquet(path)


def gather(ws: Workspace, count: int, stamped: str, compute: Callable[[Shard], pd.DataFrame]) -> pd.DataFrame:
    """Every shard of `count`, in order: read when its file is current, computed (and written)
    when missing or stale; concatenated into the whole list."""
    frames = []
    for index in range(count):
        shard = Shard(index, count)
        rows = read_shard(ws, shard, stamped)
        if rows is None:
            rows = compute(shard)
            write_shard(ws, shard, rows, stamped)
        else:
            log.info("finetune: shard %d of %d read from %s", index, count, shard.file(ws))
        frames.append(rows)
    filled = [f for f in frames if len(f)] or frames[:1]  # more shards than chunks: empty ones
    return pd.concat(filled, ignore_index=True)
