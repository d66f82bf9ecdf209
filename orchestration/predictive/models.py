"""The gate models in Dagster: train a version per day, check whether it may serve, move the champion alias.

``gate_model`` trains on the week of ``cell_features`` ending with its day and lands the version in the
registry (``<lake>/models``) and its row in ``models``. The blocking check ``promotable`` compares it
with the champion on the same test cells and looks for drifted drivers; only if it passes does
``gate_champion``, downstream in the same run, move the alias. A refused model stays in the registry
and in ``models`` with the reason, and a person can still promote it (``gigapulse models promote``).
The rules and their bounds are in :mod:`transforms.predictive.training` and docs/predictive-quality.md.
"""

# No ``from __future__ import annotations``: Dagster inspects the parameter annotations.
import warnings
from datetime import UTC, date, datetime

import dagster as dg

from orchestration.partitions import daily_partitions
from orchestration.predictive.features import cell_features
from orchestration.resources import DUCKDB_POOL, WarehouseResource

#: Name of the blocking check on ``gate_model``.
PROMOTABLE = "promotable"
#: Who ``gate_champion`` says moved the alias, in champion_history.jsonl and ``models.promoted_by``.
BY_CHECK = f"check:{PROMOTABLE}"


def _md_table(header: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


@dg.asset(group_name="predictive_quality", kinds={"sklearn", "parquet"}, partitions_def=daily_partitions,
          pool=DUCKDB_POOL, deps=[cell_features])
def gate_model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """A gate model trained for the day: the classifier of "scrapped or graded C" (and the capacity
    regressor) on the cell_features of the TRAINING_DAYS days ending with it and their verdicts, tested on
    the latest 30% of those cells. Lands the version in <lake>/models and its row in the models table.
    """
    from transforms.predictive.registry import save_model
    from transforms.predictive.training import (
        TRAINING_DAYS,
        TooFewCells,
        land_model_row,
        read_training_set,
        train_gate_model,
        training_window,
    )
    from transforms.warehouse.reader import connect

    day = date.fromisoformat(context.partition_key)
    paths = warehouse.paths()
    con = connect(paths.db_path)
    try:
        data = read_training_set(con, day)
    finally:
        con.close()
    first, last = training_window(day)
    try:
        trained = train_gate_model(data, day, paths.lake_root, created_at=datetime.now(UTC))
    except TooFewCells as exc:
        raise dg.Failure(description=f"no gate model for {day} (cell_features {first} to {last}, "
                                     f"{TRAINING_DAYS} days): {exc}") from None
    path = save_model(paths.lake_root, trained.model, trained.record)
    land_model_row(paths.lake_root, trained.row)
    ev, row = trained.evaluation, trained.row
    context.log.info(f"{row['version']}: test AUC {row['roc_auc']:.3f} on {row['test_cells']} cells")
    return dg.MaterializeResult(metadata={
        "version": row["version"],
        "path": dg.MetadataValue.path(str(path)),
        "window": f"{first} to {last}",
        "train_cells": row["train_cells"], "test_cells": row["test_cells"], "test_bad": row["test_bad"],
        "roc_auc": row["roc_auc"], "pr_auc": row["pr_auc"], "brier": row["brier"],
        "base_rate": row["base_rate"], "base_rate_brier": row["base_rate_brier"],
        "filling_only_auc": row["filling_only_auc"],
        "capacity_mae": row["capacity_mae"], "capacity_baseline_mae": row["capacity_baseline_mae"],
        "features": row["features"],
        "top_drivers": dg.MetadataValue.md(_md_table(
            ["feature", "AUC lost when shuffled"], [[d["feature"], f"{d['importance']:.4f}"] for d in ev.drivers])),
    })


with warnings.catch_warnings():
    # Partitioned checks are a Dagster preview; the model is per day, so its check must be partitioned.
    warnings.simplefilter("ignore", category=dg.PreviewWarning)

    @dg.asset_check(asset=gate_model, name=PROMOTABLE, blocking=True, partitions_def=daily_partitions,
                    pool=DUCKDB_POOL)
    def promotable(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        """May the day's newest gate model replace the champion? Refused (ERROR, so gate_champion does not
        run) if its test AUC is below the champion's on the same test cells, or if one of its top drivers
        drifted between its training and test cells (PSI above PSI_BOUND, 0.25). Passes without a champion.
        """
        from transforms.predictive import registry as R
        from transforms.predictive.training import (
            PSI_BOUND,
            data_version,
            newest_model_row,
            promotion_verdict,
            read_training_set,
            split,
            update_model_row,
        )
        from transforms.warehouse.reader import connect

        day = date.fromisoformat(context.partition_key)
        paths = warehouse.paths()
        row = newest_model_row(paths.lake_root, day)
        if row is None:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                       description=f"no gate model trained for {day}")
        con = connect(paths.db_path)
        try:
            data = read_training_set(con, day, (row["train_until"] - row["train_from"]).days + 1)
        finally:
            con.close()
        if data_version(day, data) != row["version"]:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                       description=f"the training data of {day} changed since {row['version']} was "
                                                   "trained: materialize gate_model again")
        train, test, _ = split(data)
        new = R.load_model(paths.lake_root, row["version"])
        current, note = R.champion(paths.lake_root), None
        try:
            champ = R.load_model(paths.lake_root, current) if current else None
        except R.RegistryError as exc:
            champ, note = None, f"champion unreadable ({exc})"  # a champion that cannot load serves nobody
        verdict = promotion_verdict(new, champ, train, test)
        reason = f"{note}; {verdict.reason}" if note else verdict.reason
        update_model_row(paths.lake_root, day, new.version, promotable=verdict.passed, promotion_note=reason)
        if not verdict.passed:
            context.log.warning(reason)
        return dg.AssetCheckResult(
            passed=verdict.passed, severity=dg.AssetCheckSeverity.ERROR, description=reason,
            metadata={"version": new.version, "champion": verdict.champion or "", "new_auc": verdict.new_auc,
                      "champion_auc": verdict.champion_auc if verdict.champion_auc is not None else float("nan"),
                      "psi_bound": PSI_BOUND, "drifted": dg.MetadataValue.json(verdict.drifted),
                      "psi": dg.MetadataValue.json({f: round(v, 4) for f, v in verdict.psi.items()})},
        )


@dg.asset(group_name="predictive_quality", kinds={"sklearn"}, partitions_def=daily_partitions, deps=[gate_model])
def gate_champion(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The champion alias (<lake>/models/champion.json), moved to the day's newest gate model. Runs only
    when the blocking check promotable passed in the same run; refuses a model the check did not pass.
    """
    from transforms.predictive import registry as R
    from transforms.predictive.training import newest_model_row, update_model_row

    day = date.fromisoformat(context.partition_key)
    lake_root = warehouse.paths().lake_root
    row = newest_model_row(lake_root, day)
    if row is None or row["promotable"] is not True:
        raise dg.Failure(description=f"no gate model of {day} passed the {PROMOTABLE} check: nothing to promote")
    previous = R.champion(lake_root)
    if previous != row["version"]:
        R.set_champion(lake_root, row["version"], by=BY_CHECK, reason=row["promotion_note"])
        update_model_row(lake_root, day, row["version"], promoted_at=datetime.now(UTC), promoted_by=BY_CHECK)
    return dg.MaterializeResult(metadata={"champion": row["version"], "previous": previous or "",
                                          "moved": previous != row["version"], "roc_auc": row["roc_auc"],
                                          "reason": row["promotion_note"]})


gate_model_job = dg.define_asset_job(
    "gate_model_job", selection=dg.AssetSelection.assets(gate_model, gate_champion),
    description="Train the day's gate model, check it against the champion, promote it if it passed.",
)

# Stopped by default like cell_features_daily, and 55 minutes after it (the day's features are landed),
# clear of report_daily at 02:30: both would share two cores.
gate_model_daily = dg.build_schedule_from_partitioned_job(
    gate_model_job, name="gate_model_daily", hour_of_day=2, minute_of_hour=45,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
