"""Where each stage reads and writes, relative to the pipeline workspace.

These are the same paths `dvc.yaml` declares as deps and outs; keeping them in one module means a
stage never guesses where its upstream stage put something.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # this checkout: the default pipeline workspace


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def raw_manifest(self) -> Path:
        return self.raw / "manifest.json"

    @property
    def raw_events(self) -> Path:
        return self.raw / "events.parquet"

    def raw_table(self, table: str) -> Path:
        """A raw side table (`users` or `items`)."""
        return self.raw / f"{table}.parquet"

    @property
    def validated(self) -> Path:
        return self.root / "data" / "validated"

    @property
    def validated_events(self) -> Path:
        return self.validated / "events.parquet"

    def validated_table(self, table: str) -> Path:
        """A validated side table (`users` or `items`)."""
        return self.validated / f"{table}.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "quarantine"

    def quarantine_table(self, table: str) -> Path:
        """Rows of `events`, `users` or `items` that failed a row check, with their reasons."""
        return self.quarantine / f"{table}.parquet"

    @property
    def episodes(self) -> Path:
        return self.root / "data" / "episodes"

    @property
    def tasks_file(self) -> Path:
        return self.episodes / "tasks.parquet"

    @property
    def vocab_file(self) -> Path:
        return self.episodes / "vocab.json"

    @property
    def item_text_file(self) -> Path:
        """The items' text embeddings (`data/text.py`), one column per text feature."""
        return self.episodes / "item_text.parquet"

    @property
    def text_cache(self) -> Path:
        """Embeddings of every text seen so far, by hash: kept across runs, not a DVC output."""
        return self.root / "data" / "text_cache" / "embeddings.parquet"

    @property
    def episode_stats(self) -> Path:
        return self.episodes / "stats.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def model_file(self) -> Path:
        return self.models / "meta_model.pt"

    @property
    def pretrained_model_file(self) -> Path:
        return self.models / "pretrained.pt"

    @property
    def rank_model_file(self) -> Path:
        """The meta-learned ranking model that produces the published top-K (metarec_tasks/ranking)."""
        return self.models / "rank_model.pt"

    @property
    def rank_pretrained_file(self) -> Path:
        """The non-meta ranking warm-up: fine-tuned per user, the transfer baseline of the top-K."""
        return self.models / "rank_pretrained.pt"

    @property
    def checkpoints(self) -> Path:
        return self.models / "checkpoints"

    def checkpoints_for(self, model: str) -> Path:
        """One folder per trained model (`rating`, `ranking`): each resumes on its own."""
        return self.checkpoints / model

    @property
    def predictions(self) -> Path:
        return self.root / "data" / "predictions"

    @property
    def shards(self) -> Path:
        """The published top-K in user shards (personalization/shards.py): not a DVC output, which
        DVC would empty before `finetune` runs."""
        return self.root / "data" / "shards"

    @property
    def holdout_predictions(self) -> Path:
        """Holdout users' query rows with every rating predictor's prediction."""
        return self.predictions / "holdout.parquet"

    @property
    def holdout_topk(self) -> Path:
        """Holdout users' full-catalog top-K of the ranker and every top-K baseline."""
        return self.predictions / "holdout_topk.parquet"

    @property
    def selection(self) -> Path:
        """The night's candidates, their knobs, the blend and the challenger, chosen on validation users."""
        return self.predictions / "selection.json"

    @property
    def student_model_file(self) -> Path:
        """The student distilled from the night's challenger (`selection/distill.py`)."""
        return self.predictions / "student.pt"

    @property
    def distill_timing(self) -> Path:
        """The student and its teacher scoring the holdout users: ms per 1,000 users (not a choice:
        kept out of selection.json, which must not depend on how busy the machine was)."""
        return self.predictions / "distill_timing.json"

    @property
    def recommendations(self) -> Path:
        """The top-K of every active user: what publish writes to the warehouse."""
        return self.predictions / "recommendations.parquet"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def data_quality_report(self) -> Path:
        return self.reports / "data_quality.json"

    @property
    def data_docs(self) -> Path:
        return self.reports / "data_docs"

    @property
    def train_log(self) -> Path:
        return self.reports / "train_log.csv"

    @property
    def rank_train_log(self) -> Path:
        return self.reports / "rank_train_log.csv"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def headline(self) -> Path:
        """The night in a few numbers: what `dvc metrics show` prints."""
        return self.reports / "headline.json"

    @property
    def gate(self) -> Path:
        return self.reports / "gate.json"

    @property
    def plots(self) -> Path:
        return self.reports / "plots"

    @property
    def cold_start_curve(self) -> Path:
        """Every predictor's metrics per support-size bucket (a DVC plot)."""
        return self.plots / "cold_start_curve.csv"

    @property
    def scenarios(self) -> Path:
        """Every predictor's metrics per MeLU scenario (a DVC plot)."""
        return self.plots / "scenarios.csv"

    @property
    def figures(self) -> Path:
        """PNG charts of the human-readable report (`report.md` links them)."""
        return self.reports / "figures"

    @property
    def report(self) -> Path:
        return self.reports / "report.md"

    @property
    def publish_receipt(self) -> Path:
        return self.reports / "publish.json"

    @property
    def run_page(self) -> Path:
        """The night on one self-contained HTML page (evaluation/run_page.py), written by publish."""
        return self.reports / "run.html"

    @property
    def run_overrides(self) -> Path:
        """The committed values the last triggered run replaced in params.yaml (run_settings.py)."""
        return self.root / ".metarec" / "run-overrides.json"

    @property
    def lock_file(self) -> Path:
        """Held by the stage running in this workspace (metarec_tasks/lock.py)."""
        return self.root / ".metarec" / "lock"

    def stage_status(self, stage: str) -> Path:
        """`metarec <stage>` writes its outcome here (exit code, error); not a DVC output, so a
        failed stage still leaves it for the driver that ran it through `dvc repro`."""
        return self.root / ".metarec" / "status" / f"{stage}.json"
