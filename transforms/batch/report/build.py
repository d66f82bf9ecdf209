"""What the report shows, read from the warehouse: one function per section, one HTML file per plant.

Every section reads documented warehouse tables with plain SQL (bound parameters), so an analyst can
rerun what a figure shows. A section whose table holds no rows yet says which job fills it instead of
drawing an empty chart. Plants are the ``site`` values of the asset model (``sensors``); the figures
that compare plants (readiness, energy) draw every plant in each plant's report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from transforms.batch.report import figures as F
from transforms.batch.report.html import Figure, Section, render
from transforms.lake import write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportContext:
    """What every section reads: a read-only warehouse connection, the plant, and every plant."""

    con: duckdb.DuckDBPyConnection
    site: str
    sites: tuple[str, ...]

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        return self.con.execute(sql, list(params)).fetchall()

    def has_rows(self, table: str) -> bool:
        exists = self.rows("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [table])[0][0]
        if not exists:
            return False
        return bool(self.rows(f'SELECT count(*) > 0 FROM (SELECT 1 FROM "{table}" LIMIT 1)')[0][0])


def missing(title: str, table: str, how: str) -> Section:
    """A section for a table with no rows yet: what fills it."""
    return Section(title, text=f"No rows in `{table}` yet. {how}", source=table)


# --------------------------------------------------------------------------- sections

def scrap_pareto(ctx: ReportContext) -> Section:
    """Scrapped units by stage and reason over every day the warehouse holds, largest first."""
    title = "Scrap by reason and stage"
    if not ctx.has_rows("quality_daily"):
        return missing(title, "quality_daily", "Run `gigapulse lake rollup` (or the lake_compaction_job).")
    rows = ctx.rows(
        "SELECT stage, e.key AS reason, sum(e.value) AS units, min(date), max(date) "
        "FROM quality_daily, unnest(map_entries(scrap_by_reason)) AS u(e) "
        "WHERE site = ? GROUP BY ALL ORDER BY units DESC, stage, reason", [ctx.site])
    total = sum(r[2] for r in rows)
    labels = [f"{stage}: {reason}" for stage, reason, *_ in rows]
    png = F.pareto(labels, [r[2] for r in rows], f"{ctx.site}: scrapped units by stage and reason", "units")
    first = min((r[3] for r in rows), default=None)
    last = max((r[4] for r in rows), default=None)
    text = (f"{total:,} units scrapped from {first} to {last}. The bars are sorted from the largest cause; "
            "the line is their cumulative share, so the causes left of the 80% mark are where scrap "
            "is won back.") if rows else "No unit was scrapped on the days the warehouse holds."
    return Section(title, text, [Figure(f"{ctx.site}-scrap-pareto.png", png, "scrap Pareto")],
                   ("stage", "reason", "units", "share"),
                   [(s, r, n, n / total) for s, r, n, *_ in rows[:15]], source="quality_daily.scrap_by_reason")


#: The sections of a report, in order. Each takes the context and returns one section.
SECTIONS: list[Callable[[ReportContext], Section]] = [scrap_pareto]


# --------------------------------------------------------------------------- the files

def plant_sites(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    """Every site of the asset model, in name order."""
    return tuple(r[0] for r in con.execute("SELECT DISTINCT site FROM sensors ORDER BY site").fetchall())


def build_report(con: duckdb.DuckDBPyConnection, out_dir: Path, sites: Sequence[str] | None = None,
                 progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``<out_dir>/<site>.html`` (figures embedded) and its PNGs per plant; returns the HTML paths.

    ``sites`` defaults to every plant of the asset model; an unknown one is refused.
    """
    every = plant_sites(con)
    chosen = tuple(sites) if sites else every
    unknown = sorted(set(chosen) - set(every))
    if unknown:
        raise ValueError(f"no plant {', '.join(unknown)} in the warehouse (plants: {', '.join(every) or 'none'})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for site in chosen:
        ctx = ReportContext(con, site, every)
        sections = []
        for section in SECTIONS:
            if progress:
                progress(f"{site}: {section.__name__.replace('_', ' ')}")
            sections.append(section(ctx))
        for s in sections:
            for fig in s.figures:
                write_atomic(out_dir / fig.name, lambda f, png=fig.png: f.write(png))
        links = [(other, f"{other}.html") for other in every if other != site]
        page = render(f"gigapulse plant report: {site}", f"Generated {stamp} from the warehouse.", sections, links)
        path = out_dir / f"{site}.html"
        write_atomic(path, lambda f, text=page: f.write(text.encode()))
        made.append(path)
        log.info("report: wrote %s", path)
    return made
