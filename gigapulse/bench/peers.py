"""The peers of ``gigapulse bench stream`` (Quix Streams, the aiokafka ceiling), run as child processes."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gigapulse.bench.harness import MIB

# --------------------------------------------------------------------------- stream peers (child processes)

def _quix_peer(args: dict[str, Any]) -> dict[str, Any]:
    """The same per-sensor 1-minute features, written the way Quix Streams' docs write them.

    Frames are expanded into one row per reading, the row's event time set from the reading, and a
    tumbling 1-minute window aggregates count, mean, std, min, max and last per sensor; closed
    windows go to Quix's Parquet file sink. ``variant="key"`` windows by the message key (the
    gateway, which owns its sensors) with a per-sensor accumulator; ``variant="group_by"``
    re-keys every row by sensor through a repartition topic, the textbook form, which is slower.
    The app stops once it has consumed ``limit`` readings or reached the end offsets, and its final
    checkpoint flushes the sink.
    """
    import pyarrow.parquet as pq
    from quixstreams import Application
    from quixstreams.context import message_context
    from quixstreams.dataframe.windows import Count, Last, Max, Mean, Min, Reduce
    from quixstreams.sinks.community.file.local import LocalFileSink

    from schemas.contracts import decode_reading_message

    out_dir = Path(args["out_dir"])
    app = Application(broker_address=args["bootstrap"], consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
                      auto_offset_reset="earliest", state_dir=str(out_dir / "state"), loglevel="WARNING")
    source = app.topic(args["topic"], value_deserializer="bytes", key_deserializer="bytes")
    ends = {int(p): int(o) for p, o in args["end_offsets"].items()}
    pending = {p for p, o in ends.items() if o > 0}
    limit = int(args["limit"])
    regroup = args["variant"] == "group_by"
    seen = {"readings": 0, "messages": 0, "first": None, "target": None, "windowed": 0}

    def rows(payload: bytes) -> list[dict[str, Any]]:
        if seen["target"] is not None:
            return []  # past the limit: consumed, not processed
        ctx = message_context()
        frame = decode_reading_message(payload)
        if seen["first"] is None:
            seen["first"] = time.perf_counter()
        seen["readings"] += len(frame)
        seen["messages"] += 1
        if ctx.offset + 1 >= ends.get(ctx.partition, 0):
            pending.discard(ctx.partition)
        if seen["readings"] >= limit or not pending:
            seen["target"] = seen["readings"]
            if not regroup:
                app.stop()  # takes effect once this message has gone through the whole pipeline
        s = frame.sensors
        return [{"sensor_id": s[i], "ts": t, "value": v}
                for i, t, v in zip(frame.idx.tolist(), frame.ts_ms.tolist(), frame.value.tolist(), strict=True)]

    sdf = app.dataframe(source)
    sdf = sdf.apply(rows, expand=True)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value["ts"])
    if regroup:
        sdf = sdf.group_by("sensor_id")

        def windowed(row):
            # Rows come back through the repartition topic: stop when all of them are windowed.
            seen["windowed"] += 1
            if seen["target"] is not None and seen["windowed"] >= seen["target"]:
                app.stop()

        sdf = sdf.update(windowed)

        def welford_init(row):
            return (1, row["value"], 0.0)

        def welford(acc, row):
            n, mean, m2 = acc
            x = row["value"]
            n += 1
            d = x - mean
            mean += d / n
            return (n, mean, m2 + d * (x - mean))

        sdf = sdf.tumbling_window(60_000).agg(count=Count(), mean=Mean("value"), min=Min("value"),
                                             max=Max("value"), last=Last("value"),
                                             m2=Reduce(welford, welford_init)).final()

        def finish(w, key, timestamp, headers):
            n, _, m2 = w["m2"]
            return {"sensor_id": key, "window_start": w["start"], "window_end": w["end"], "count": w["count"],
                    "mean": w["mean"], "std": math.sqrt(m2 / (n - 1)) if n > 1 else None, "min": w["min"],
                    "max": w["max"], "last": w["last"]}

        sdf = sdf.apply(finish, metadata=True)
    else:
        def init(row):
            x = row["value"]
            return {row["sensor_id"]: [1, x, 0.0, x, x, x]}

        def reduce(acc, row):
            x = row["value"]
            st = acc.get(row["sensor_id"])
            if st is None:
                acc[row["sensor_id"]] = [1, x, 0.0, x, x, x]
                return acc
            n = st[0] + 1
            d = x - st[1]
            mean = st[1] + d / n
            st[0], st[1], st[2] = n, mean, st[2] + d * (x - mean)
            st[3], st[4], st[5] = min(st[3], x), max(st[4], x), x
            return acc

        def per_sensor(w):
            return [{"sensor_id": sid, "window_start": w["start"], "window_end": w["end"], "count": n, "mean": mean,
                     "std": math.sqrt(m2 / (n - 1)) if n > 1 else None, "min": lo, "max": hi, "last": last}
                    for sid, (n, mean, m2, lo, hi, last) in w["value"].items()]

        sdf = sdf.tumbling_window(60_000).reduce(reduce, init).final().apply(per_sensor, expand=True)
    sdf.sink(LocalFileSink(directory=str(out_dir / "features"), format="parquet"))
    app.run()
    done = time.perf_counter()
    feature_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (out_dir / "features").rglob("*.parquet"))
    return {"readings": seen["readings"], "messages": seen["messages"], "feature_rows": feature_rows,
            "active_s": done - seen["first"] if seen["first"] else None}


async def _ceiling_async(args: dict[str, Any]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.contracts import decode_reading_message

    consumer = AIOKafkaConsumer(bootstrap_servers=args["bootstrap"], group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * MIB,
                                fetch_max_bytes=64 * MIB)
    await consumer.start()
    try:
        end = {TopicPartition(args["topic"], int(p)): int(o) for p, o in args["end_offsets"].items()}
        consumer.assign(list(end))
        await consumer.seek_to_beginning(*end)
        pending = {tp for tp, o in end.items() if o > 0}
        readings = messages = 0
        first = None
        while pending:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for tp, records in batch.items():
                if first is None:
                    first = time.perf_counter()
                for rec in records:
                    readings += len(decode_reading_message(rec.value))
                messages += len(records)
                if records and records[-1].offset + 1 >= end[tp]:
                    pending.discard(tp)
        return {"readings": readings, "messages": messages,
                "active_s": time.perf_counter() - first if first else None}
    finally:
        await consumer.stop()


def _ceiling_peer(args: dict[str, Any]) -> dict[str, Any]:
    """A plain aiokafka consumer that only decodes frames: what any Python worker must pay at least."""
    return asyncio.run(_ceiling_async(args))



# --------------------------------------------------------------------------- entry point for peers

_PEERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"quix": _quix_peer, "ceiling": _ceiling_peer}


def _peer_main(argv: list[str]) -> int:
    """``python -m gigapulse.bench <peer> '<json args>'``: run a peer, write its result JSON."""
    if len(argv) != 2 or argv[0] not in _PEERS:
        print(f"usage: python -m gigapulse.bench {{{','.join(_PEERS)}}} '<json args>'", file=sys.stderr)
        return 2
    args = json.loads(argv[1])
    result = _PEERS[argv[0]](args)
    Path(args["result"]).write_text(json.dumps(result))
    return 0
