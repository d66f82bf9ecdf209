"""``gigapulse topics`` and ``gigapulse schemas``: the topic catalog and the event contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gigapulse.cli.common import BootstrapOpt, _bootstrap, _reachable, out

topics_app = typer.Typer(help="The v1 topic catalog.", no_args_is_help=True)
schemas_app = typer.Typer(help="Event contracts and their JSON Schemas.", no_args_is_help=True)


@topics_app.command("apply")
def topics_apply(bootstrap: BootstrapOpt = None,
                 replication_factor: Annotated[int, typer.Option(min=1, max=9, help="Replicas of a topic created "
                                                                 "now: 1 for one broker, 3 on a cluster.")] = 1,
                 min_insync_replicas: Annotated[int | None, typer.Option(min=1, max=9, help="Set on every topic: "
                                                                         "replicas an acks=all write needs (2 on "
                                                                         "a 3-node cluster).")] = None):
    """Create or update every catalog topic (idempotent)."""
    from ingestion.topics import apply_topics

    if min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise typer.BadParameter(f"{min_insync_replicas} is more than the {replication_factor} replicas: no write "
                                 "could ever be acknowledged", param_hint="--min-insync-replicas")
    servers = _bootstrap(bootstrap)
    _reachable(servers)
    changes = apply_topics(servers, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas)
    for c in changes:
        out.print(f"{c.topic:32s} {c.action:17s} partitions={c.partitions}")


@topics_app.command("list")
def topics_list():
    """Print the catalog: partitions, cleanup policy, retention, key and value."""
    from schemas.topics import TOPICS

    table = Table("topic", "partitions", "cleanup", "retention", "key", "value")
    for t in TOPICS:
        retention = "forever" if t.retention_ms < 0 else f"{t.retention_ms / 86_400_000:g} d"
        table.add_row(t.name, str(t.partitions), t.cleanup_policy, retention, t.key, t.value)
    out.print(table)


# --------------------------------------------------------------------------- schemas

@schemas_app.command("export")
def schemas_export(out_dir: Annotated[Path, typer.Option("--out", help="Directory for the .json files.")] =
                   Path("schemas/jsonschema")):
    """Write the JSON Schema of every contract (for producers in other languages)."""
    from schemas.contracts import json_schemas

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        path = out_dir / f"{name}.v1.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        out.print(f"wrote {path}")
