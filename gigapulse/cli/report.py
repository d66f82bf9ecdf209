"""``gigapulse report``: the batch side's outputs as one HTML page per plant, with its PNG figures.

It only reads the warehouse (read-only connection), so it runs beside the stream, the maintenance loop
and analysts' queries. The Dagster assets link to the same files in their metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gigapulse.cli.common import UserError, app, console, out


@app.command()
def report(
    plant: Annotated[list[str] | None, typer.Option("--plant", "-p", help="Site of a plant (repeatable), e.g. "
                                                    "ref or leg; default: every plant of the asset model.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Directory for <site>.html and its PNGs "
                                                 "[default: $GIGAPULSE_DATA_DIR/report].")] = None,
):
    """Write a self-contained HTML report per plant (figures embedded, PNGs beside it).

    Readiness against the other plants, sensor density, scrap by reason and stage, material loss,
    energy per good cell with the metered share of the plant, the gate model and what its gate is
    worth, and data quality: each section says
    which warehouse table it reads, or which job fills that table when it is still empty.
    """
    from transforms.batch.report import build_report
    from transforms.settings import DataSettings
    from transforms.warehouse.reader import connect

    data = DataSettings()
    if not data.db_path.exists():
        raise UserError(f"no warehouse at {data.db_path} (GIGAPULSE_DATA_DIR={data.data_dir}): run "
                        "`gigapulse demo` or the stream and `gigapulse warehouse` first")
    target = out_dir or data.report_dir
    con = connect(data.db_path)
    try:
        with console.status("report...") as status:
            try:
                paths = build_report(con, target, plant, progress=lambda msg: status.update(f"report: {msg}"),
                                     lake_root=data.lake_root)
            except ValueError as exc:
                raise UserError(str(exc)) from None
    finally:
        con.close()
    for path in paths:
        out.print(f"report: {path}")
