"""Per-run settings that never outlive their run.

A triggered run writes its settings (run date, algorithm, epochs, source, force) into `params.yaml`,
because that is what DVC tracks and the stages read. Before it does, the values it replaces are
saved (`Workspace.run_overrides`), and the next run puts them back first: so a manual trigger with
`{"meta_epochs": 1, "source": "movielens"}` changes that run only, and every later run starts from
the committed configuration. Keys a person edits by hand are never touched.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from metarec_tasks.files import write_json
from metarec_tasks.params import PARAMS_FILE, get_dotted, update_params_file
from metarec_tasks.paths import Workspace


def committed_values(ws: Workspace) -> dict[str, Any]:
    """The values the last run replaced (empty when no run is pending a reset)."""
    return json.loads(ws.run_overrides.read_text()) if ws.run_overrides.is_file() else {}


def restore_committed(ws: Workspace) -> bool:
    """Put back what the previous run changed; return whether params.yaml changed."""
    saved = committed_values(ws)
    changed = update_params_file(ws.root / PARAMS_FILE, saved) if saved else False
    ws.run_overrides.unlink(missing_ok=True)
    return changed


def apply_run_settings(ws: Workspace, overrides: dict[str, Any]) -> bool:
    """Reset the previous run's settings, then write this run's, remembering what they replace."""
    restore_committed(ws)
    raw = yaml.safe_load((ws.root / PARAMS_FILE).read_text())
    replaced = {key: _plain(get_dotted(raw, key)) for key in overrides}
    changed = update_params_file(ws.root / PARAMS_FILE, overrides)
    write_json(ws.run_overrides, {k: v for k, v in replaced.items() if v != overrides[k]})
    return changed


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
