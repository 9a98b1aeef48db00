"""A deterministic simulated world of users, items and daily behavior logs.

Why it looks the way it does: cold-start recommendation only makes sense when (a) demographics say
something, but not everything, about taste, (b) popularity is heavy-tailed, and (c) new users and new
items keep arriving. Every entity and every day is drawn from its own seeded stream, so a day's
partition is identical no matter which run date asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd

from metarec_tasks.logs.contract import AVAILABLE_COLUMN, IMPLICIT_VALUE, RATING_EVENT, to_raw_dtypes
from metarec_tasks.params import SyntheticParams

AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("F", "M")
OCCUPATIONS = (
    "student",
    "engineer",
    "artist",
    "educator",
    "healthcare",
    "sales",
    "retired",
    "writer",
    "scientist",
    "other",
)
CATEGORIES = (
    "action",
    "comedy",
    "drama",
    "documentary",
    "horror",
    "romance",
    "scifi",
    "thriller",
    "animation",
    "family",
    "music",
    "crime",
)
TAGS = (
    "classic",
    "indie",
    "award",
    "cult",
    "blockbuster",
    "foreign",
    "dark",
    "feelgood",
    "slow",
    "visual",
    "dialogue",
    "twist",
    "based-on-book",
    "sequel",
    "short",
)
MAX_TAGS_PER_ITEM = 3
# Implicit events: what users look at beyond what they rate, drawn from the same taste (next picks).
IMPLICIT_TYPES = ("view", "click", "purchase")
IMPLICIT_PROBS = (0.5, 0.35, 0.15)
BLOCK = 1024  # entities drawn per seeded block: stable attributes without a per-entity loop
PICK_CELLS = 4_000_000  # (user, item) scores a day's simulation holds at once: 32 MB per array

# Stream ids: keep each kind of draw on its own seeded stream.
_FEATURE_STREAM, _USER_STREAM, _ITEM_STREAM, _DAY_STREAM, _BAD_STREAM, _IMPLICIT_STREAM, _TITLE_STREAM = (
    range(7)
)
# Item titles: words of one theme, the theme being the direction of the item's hidden taste component
# that no categorical feature carries — what a text encoder can read and the genre-only model cannot.
THEMES = (
    ("galaxy", "starship", "orbit", "planet", "astronaut", "comet"),
    ("ocean", "harbor", "island", "sailor", "tide", "reef"),
    ("battle", "soldier", "siege", "empire", "general", "frontline"),
    ("wedding", "heart", "kiss", "romance", "valentine", "bride"),
    ("heist", "detective", "gangster", "murder", "alibi", "prison"),
    ("campus", "teacher", "exam", "classroom", "graduation", "student"),
    ("guitar", "concert", "melody", "band", "singer", "rhythm"),
    ("forest", "mountain", "river", "wolf", "storm", "valley"),
)

BAD_ROW_KINDS = (
    "null_user",
    "unknown_event_type",
    "rating_out_of_range",
    "nan_value",
    "unparseable_timestamp",
    "malformed_item_id",
    "exact_duplicate",
)


@dataclass(frozen=True)
class World:
    """Everything needed to simulate behavior up to one day."""

    users: pd.DataFrame  # user_id, features, signup_day
    items: pd.DataFrame  # item_id, features, signup_day
    user_taste: np.ndarray  # [n_users, d]
    user_bias: np.ndarray
    item_taste: np.ndarray  # [n_items, d]
    item_bias: np.ndarray
    item_log_popularity: np.ndarray


def user_count(params: SyntheticParams, day_index: int) -> int:
    return params.initial_users + params.new_users_per_day * max(day_index, 0)


def item_count(params: SyntheticParams, day_index: int) -> int:
    return params.initial_items + params.new_items_per_day * max(day_index, 0)


def day_index(params: SyntheticParams, day: date) -> int:
    return (day - params.start_date).days


def build_world(params: SyntheticParams, seed: int, last_day: date) -> World:
    """Draw every user and item that exists on `last_day` (later days only add entities)."""
    last = day_index(params, last_day)
    d = params.latent_dim
    feature_rng = np.random.default_rng([seed, _FEATURE_STREAM])
    scale = 1.0 / np.sqrt(3.0)
    embed = {
        "age_bucket": feature_rng.normal(0, scale, (len(AGE_BUCKETS), d)),
        "gender": feature_rng.normal(0, scale, (len(GENDERS), d)),
        "occupation": feature_rng.normal(0, scale, (len(OCCUPATIONS), d)),
        "category": feature_rng.normal(0, 1.0, (len(CATEGORIES), d)),
        "tags": feature_rng.normal(0, 1.0, (len(TAGS), d)),
    }

    n_users = user_count(params, last)
    u_cols = _blocks(seed, _USER_STREAM, n_users, lambda rng, n: _draw_users(rng, n, d))
    user_signal = embed["age_bucket"][u_cols["age"]] + embed["gender"][u_cols["gender"]]
    user_signal = user_signal + embed["occupation"][u_cols["occupation"]]
    user_taste = (
        np.sqrt(params.feature_signal) * user_signal + np.sqrt(1 - params.feature_signal) * u_cols["noise"]
    )
    users = pd.DataFrame(
        {
            "user_id": [f"u{i:06d}" for i in range(n_users)],
            "age_bucket": np.asarray(AGE_BUCKETS)[u_cols["age"]],
            "gender": np.asarray(GENDERS)[u_cols["gender"]],
            "occupation": np.asarray(OCCUPATIONS)[u_cols["occupation"]],
            "signup_day": _signup_days(n_users, params.initial_users, params.new_users_per_day),
        }
    )

    n_items = item_count(params, last)
    i_cols = _blocks(seed, _ITEM_STREAM, n_items, lambda rng, n: _draw_items(rng, n, d))
    tag_matrix = i_cols["tags"]  # [n, len(TAGS)] 0/1
    tag_signal = tag_matrix @ embed["tags"] / np.maximum(tag_matrix.sum(1, keepdims=True), 1)
    item_signal = (embed["category"][i_cols["category"]] + tag_signal) / np.sqrt(2.0)
    item_taste = np.sqrt(0.7) * item_signal + np.sqrt(0.3) * i_cols["noise"]
    tags_text = ["|".join(np.asarray(TAGS)[row.astype(bool)]) for row in tag_matrix]
    titles = _titles(seed, i_cols["noise"], n_items, d)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in range(n_items)],
            "category": np.asarray(CATEGORIES)[i_cols["category"]],
            "tags": tags_text,
            "title": titles,
            "signup_day": _signup_days(n_items, params.initial_items, params.new_items_per_day),
            AVAILABLE_COLUMN: np.where(i_cols["availability"] < params.unavailable_share, "false", "true"),
        }
    )
    popularity_rank = i_cols["popularity_rank"]
    return World(
        users=users,
        items=items,
        user_taste=user_taste,
        user_bias=u_cols["bias"],
        item_taste=item_taste,
        item_bias=i_cols["bias"],
        item_log_popularity=-params.zipf_exponent * np.log1p(popularity_rank),
    )


def simulate_day(params: SyntheticParams, seed: int, world: World, day: date) -> pd.DataFrame:
    """The behavior log of one day: ratings in the landing contract, plus injected bad rows."""
    idx = day_index(params, day)
    rng = np.random.default_rng([seed, _DAY_STREAM, idx])
    n_users = user_count(params, idx)
    n_items = item_count(params, idx)
    signup = world.users["signup_day"].to_numpy()[:n_users]
    is_new = signup == idx
    active = is_new | (rng.random(n_users) < params.daily_active_share)
    active_users = np.flatnonzero(active)
    mean_events = np.where(is_new[active_users], params.new_user_events, params.events_per_active_user)
    n_events = 1 + rng.poisson(np.maximum(mean_events - 1, 0))
    n_events = np.minimum(n_events, n_items)

    implicit_rng = np.random.default_rng([seed, _IMPLICIT_STREAM, idx])
    n_implicit = np.minimum(implicit_rng.poisson(params.implicit_per_rating * n_events), n_items - n_events)
    rows_user, rows_item, imp_user, imp_item = [], [], [], []
    # Gumbel top-k: each user picks n distinct items with probability ∝ popularity × taste. Users go in
    # blocks of PICK_CELLS (user, item) pairs: a day of a million users would be gigabytes at once, and
    # the Gumbel noise, drawn in row order, is the same stream whatever the block size.
    block = max(1, PICK_CELLS // max(n_items, 1))
    for start in range(0, len(active_users), block):
        some = slice(start, start + block)
        affinity = world.user_taste[active_users[some]] @ world.item_taste[:n_items].T
        logits = world.item_log_popularity[:n_items] + params.taste_temperature * affinity / np.sqrt(
            params.latent_dim
        )
        order = np.argsort(-(logits + rng.gumbel(size=logits.shape)), axis=1)
        for row, (user, k, extra) in enumerate(
            zip(active_users[some], n_events[some], n_implicit[some], strict=True)
        ):
            rows_user.append(np.full(k, user))
            rows_item.append(order[row, :k])
            imp_user.append(np.full(extra, user))
            imp_item.append(order[row, k : k + extra])
    users = np.concatenate(rows_user) if rows_user else np.zeros(0, int)
    items = np.concatenate(rows_item) if rows_item else np.zeros(0, int)

    mean = 3.2 + world.user_bias[users] + world.item_bias[items]
    taste = np.einsum("nd,nd->n", world.user_taste[users], world.item_taste[items])
    noisy = mean + taste / np.sqrt(params.latent_dim) + params.rating_noise * rng.normal(size=len(users))
    ratings = np.clip(np.rint(noisy), 1, 5)
    day_start = datetime.combine(day, time(0), tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86_400, len(users)))
    events = pd.DataFrame(
        {
            "user_id": world.users["user_id"].to_numpy()[users],
            "item_id": world.items["item_id"].to_numpy()[items],
            "event_type": RATING_EVENT,
            "value": ratings.astype("float64"),
            "timestamp": [
                (day_start + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ") for s in seconds
            ],
        }
    )
    events = pd.concat([events, _implicit_events(world, imp_user, imp_item, day_start, implicit_rng)])
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    events = _inject_bad_rows(events, params.bad_row_share, np.random.default_rng([seed, _BAD_STREAM, idx]))
    return to_raw_dtypes(events)


def _implicit_events(world: World, users: list, items: list, day_start: datetime, rng) -> pd.DataFrame:
    """View/click/purchase events (value 1.0) of items a user looked at beyond the ones they rated."""
    users = np.concatenate(users) if users else np.zeros(0, int)
    items = np.concatenate(items) if items else np.zeros(0, int)
    seconds = rng.integers(0, 86_400, len(users))
    return pd.DataFrame(
        {
            "user_id": world.users["user_id"].to_numpy()[users],
            "item_id": world.items["item_id"].to_numpy()[items],
            "event_type": np.asarray(IMPLICIT_TYPES)[
                rng.choice(len(IMPLICIT_TYPES), len(users), p=IMPLICIT_PROBS)
            ],
            "value": IMPLICIT_VALUE,
            "timestamp": [
                (day_start + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ") for s in seconds
            ],
        }
    )


def side_tables(world: World, last_day_index: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """User and item side tables as a producer would deliver them (no simulator internals)."""
    users = world.users[world.users["signup_day"] <= last_day_index].drop(columns="signup_day")
    items = world.items[world.items["signup_day"] <= last_day_index].drop(columns="signup_day")
    return users.reset_index(drop=True), items.reset_index(drop=True)


def _inject_bad_rows(events: pd.DataFrame, share: float, rng: np.random.Generator) -> pd.DataFrame:
    """Append corrupted copies of random rows: the good rows stay, the bad ones must be caught."""
    n_bad = round(share * len(events))
    if n_bad == 0 or events.empty:
        return events
    bad = events.iloc[rng.integers(0, len(events), n_bad)].copy().astype({"value": "float64"})
    bad = bad.astype(object)
    kinds = rng.choice(len(BAD_ROW_KINDS), n_bad)
    for row, kind in zip(range(n_bad), kinds, strict=True):
        name = BAD_ROW_KINDS[kind]
        col = {
            "null_user": ("user_id", None),
            "unknown_event_type": ("event_type", "hover"),
            "rating_out_of_range": ("value", 9.0),
            "nan_value": ("value", float("nan")),
            "unparseable_timestamp": ("timestamp", "yesterday-ish"),
            "malformed_item_id": ("item_id", "i 1; DROP TABLE x"),
            "exact_duplicate": (None, None),
        }[name]
        if col[0] is not None:
            bad.iat[row, bad.columns.get_loc(col[0])] = col[1]
    return pd.concat([events.astype(object), bad], ignore_index=True)


def _signup_days(n: int, initial: int, per_day: int) -> np.ndarray:
    idx = np.arange(n)
    if per_day == 0:
        return np.zeros(n, dtype=int)
    return np.where(idx < initial, 0, 1 + (idx - initial) // per_day)


def _titles(seed: int, noise: np.ndarray, n: int, d: int) -> list[str]:
    """ "The <word> of the <word>": two words of the theme nearest the item's hidden taste noise."""
    directions = np.random.default_rng([seed, _TITLE_STREAM]).normal(0, 1, (len(THEMES), d))
    theme = np.argmax(noise @ directions.T, axis=1) if n else np.zeros(0, int)
    words = _blocks(seed, _TITLE_STREAM + 1, n, lambda rng, k: {"w": rng.integers(0, 1 << 30, (k, 2))})
    picks = words.get("w", np.zeros((0, 2), np.int64))
    return [
        f"The {THEMES[t][a % len(THEMES[t])]} of the {THEMES[t][b % len(THEMES[t])]}"
        for t, (a, b) in zip(theme, picks, strict=True)
    ]


def _blocks(seed: int, stream: int, n: int, draw) -> dict[str, np.ndarray]:
    """Draw `n` entities in fixed-size seeded blocks, so entity i never depends on n."""
    parts: list[dict[str, np.ndarray]] = []
    for block in range((n + BLOCK - 1) // BLOCK):
        parts.append(draw(np.random.default_rng([seed, stream, block]), BLOCK))
    return {key: np.concatenate([p[key] for p in parts])[:n] for key in parts[0]} if parts else {}


def _draw_users(rng: np.random.Generator, n: int, d: int) -> dict[str, np.ndarray]:
    return {
        "age": rng.choice(len(AGE_BUCKETS), n, p=[0.05, 0.2, 0.3, 0.2, 0.15, 0.1]),
        "gender": rng.integers(0, len(GENDERS), n),
        "occupation": rng.integers(0, len(OCCUPATIONS), n),
        "noise": rng.normal(0, 1, (n, d)),
        "bias": rng.normal(0, 0.35, n),
    }


def _draw_items(rng: np.random.Generator, n: int, d: int) -> dict[str, np.ndarray]:
    n_tags = rng.integers(1, MAX_TAGS_PER_ITEM + 1, n)
    tag_scores = rng.random((n, len(TAGS)))
    ranks = np.argsort(np.argsort(-tag_scores, axis=1), axis=1)
    return {
        "category": rng.integers(0, len(CATEGORIES), n),
        "tags": (ranks < n_tags[:, None]).astype(float),
        "noise": rng.normal(0, 1, (n, d)),
        "bias": rng.normal(0, 0.3, n),
        "popularity_rank": rng.permutation(n * 4)[:n].astype(float),
        "availability": rng.random(n),  # drawn last: earlier draws stay what they were
    }
