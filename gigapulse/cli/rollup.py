"""``gigapulse lake rollup``: build the daily rollups that are missing or whose sources changed.

The command function is registered in ``gigapulse/cli/__init__.py`` (not decorated here), so it can move
under another group without changing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Annotated

import typer
from rich.table import Table

from gigapulse.cli.common import UserError, _fmt, _progress, out


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date YYYY-MM-DD", param_hint=option) from None


def rollup(
    day: Annotated[str | None, typer.Option("--date", help="Rebuild this UTC day (YYYY-MM-DD), whatever its "
                                                            "state.")] = None,
    since: Annotated[str | None, typer.Option(help="Rebuild every day from this one (YYYY-MM-DD) on.")] = None,
    rebuild_all: Annotated[bool, typer.Option("--all", help="Rebuild every day that has source data.")] = False,
    names: Annotated[list[str] | None, typer.Option("--rollup", "-r", help="Only this rollup (repeatable): "
                                                    "quality_daily, energy_daily, energy_shift, sensor_daily, "
                                                    "sensor_health_daily.")] = None,
):
    """Build the daily rollups (docs/warehouse-rollups.md) into <lake>/rollups/.

    By default only the days that have no rollup yet or whose source files changed since theirs was
    built (late data included). A day whose sources have been expired keeps its rollup.
    """
    from transforms.settings import DataSettings, RollupSettings
    from transforms.warehouse.rollups import lake_sources, plan_rollups, refresh_rollups, rollup_specs

    one, first = _day(day, "--date"), _day(since, "--since")
    if sum((one is not None, first is not None, rebuild_all)) > 1:
        raise typer.BadParameter("give at most one of --date, --since and --all", param_hint="--date")
    specs = rollup_specs(RollupSettings().shift_starts)
    unknown = [n for n in names or () if n not in specs]
    if unknown:
        raise typer.BadParameter(f"unknown rollup {unknown[0]!r}; known: {', '.join(specs)}", param_hint="--rollup")
    data = DataSettings()
    lake = data.lake_root
    if not lake.is_dir():
        raise UserError(f"no lake at {lake}: the stream writes it (GIGAPULSE_DATA_DIR is {data.data_dir})")
    todo, kept = plan_rollups(lake, names, specs=specs, since=first, days=[one] if one else None,
                              force=rebuild_all or first is not None)
    if not todo and not kept:
        out.print(f"rollups up to date ({len(names or specs)} rollups, lake at {lake})")
        return
    with _progress() as bar:
        task = bar.add_task("rollups", total=len(todo), info="")
        report = refresh_rollups(lake_sources(lake, specs), lake, specs=specs, tasks=todo,
                                 on_built=lambda r: bar.update(task, advance=1, info=f"{r.name} {r.day}"))
    summary: dict[str, list] = defaultdict(lambda: [0, 0, 0.0, set()])
    for r in report.built:
        s = summary[r.name]
        s[0] += 1
        s[1] += r.rows
        s[2] += r.seconds
        s[3].add(r.reason)
    table = Table("rollup", "days", "rows", "seconds", "why", title="rollups built")
    for name, (days, rows, seconds, why) in summary.items():
        table.add_row(name, _fmt(days), _fmt(rows), f"{seconds:.2f}", ", ".join(sorted(why)))
    if summary:
        out.print(table)
    for t in kept:
        out.print(f"kept {t.name} {t.day}: its sources have been expired, so it is not rebuilt")
