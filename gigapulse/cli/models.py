"""``gigapulse models``: the gate models in the lake's registry, and the human path to move the champion.

``list`` reads the ``models`` table's day files and ``<lake>/models/champion.json``; ``promote`` moves the
champion alias to a version whatever the ``promotable`` check said (a rollback, or a model a person
trusts), and records who did it and why in ``champion_history.jsonl`` (docs/predictive-quality.md).
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from gigapulse.cli.common import UserError, out

models_app = typer.Typer(
    help="The gate models in the lake's registry (<lake>/models): list the versions, move the champion.",
    no_args_is_help=True,
)


def _lake_root():
    from transforms.settings import DataSettings

    data = DataSettings()
    if not data.lake_root.is_dir():
        raise UserError(f"no lake at {data.lake_root} (GIGAPULSE_DATA_DIR={data.data_dir}): run the stream first")
    return data.lake_root


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


@models_app.command("list")
def list_models():
    """Every trained version (newest first) with its test AUC, the promotable check's verdict and the champion."""
    from schemas.batch import MODELS
    from transforms.batch.store import batch_days
    from transforms.predictive.registry import champion, models_dir
    from transforms.predictive.training import model_rows

    lake_root = _lake_root()
    rows = [r for d in batch_days(lake_root, MODELS) for r in model_rows(lake_root, d)]
    current = champion(lake_root)
    if not rows:
        out.print(f"no gate model in {lake_root}: materialize gate_model (gigapulse jobs run gate_model_job)")
        return
    # The version names the day it was trained for; narrow columns keep it whole in an 80-column terminal.
    grid = Table(title="gate models, newest first")
    grid.add_column("version", no_wrap=True, min_width=20)  # never cut: it is what `promote` takes
    for header in ("test cells", "AUC", "filling only AUC"):
        grid.add_column(header, justify="right")
    grid.add_column("check")
    grid.add_column("champion")
    for r in sorted(rows, key=lambda r: r["created_at"], reverse=True):
        fill = "" if r["filling_only_auc"] is None else f"{r['filling_only_auc']:.3f}"
        verdict = {True: "passed", False: "refused", None: "-"}[r["promotable"]]
        grid.add_row(r["version"], str(r["test_cells"]), f"{r['roc_auc']:.3f}", fill, verdict,
                     "*" if r["version"] == current else "")
    out.print(grid)
    out.print(f"registry: {models_dir(lake_root)}")
    if current and current not in {r["version"] for r in rows}:
        out.print(f"champion: {current} (no row in the models table)")


@models_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="The version to serve, e.g. gate-20260105-3f2a9c.")],
    reason: Annotated[str, typer.Option(help="Why, kept in the champion's history.")] = "promoted by hand",
):
    """Make VERSION the champion the live score uses, whatever the promotable check said."""
    from transforms.predictive import registry as R
    from transforms.predictive.training import update_model_row

    lake_root = _lake_root()
    by = f"cli:{_user()}"
    previous = R.champion(lake_root)
    try:
        R.load_model(lake_root, version)  # a file this gigapulse cannot load must not become champion
        R.set_champion(lake_root, version, by=by, reason=reason)
    except R.RegistryError as exc:
        raise UserError(str(exc)) from None
    trained_for = datetime.strptime(version.split("-")[1], "%Y%m%d").date()
    update_model_row(lake_root, trained_for, version, promoted_at=datetime.now(UTC), promoted_by=by)
    out.print(f"champion: {version} (was {previous or 'none'})")
