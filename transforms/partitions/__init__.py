"""Per-partition stream processing with exactly-once checkpoints into the lake.

One :class:`ReadingsPartition` (or :class:`EventsPartition`) exists per assigned source partition.
It decodes and validates messages (bad ones become dead-letter rows), enriches readings from the
asset model, feeds the pure feature classes of :mod:`transforms.features`, and buffers lake rows.
A checkpoint hands those rows and a snapshot of the feature state to :mod:`transforms.checkpoint`,
which owns the commit point: lake files first, then the partition's checkpoint file. On
(re)assignment a partition resumes from that file, features included.

No Faust or Kafka import here: the Faust app (:mod:`transforms.app`) only wires messages in and
acknowledgements out, so all of this is tested without a broker.
"""

from __future__ import annotations

# ``X as X``: kept importable from here as before the split into modules (the app, the tests).
from schemas.contracts import ContractError as ContractError
from transforms.checkpoint import (
    CheckpointFailed,
    CheckpointJob,
    CheckpointResult,
    checkpoint_path,
    committed_next_offset,
    drop_uncommitted,
)
from transforms.partitions.base import _MS_TS as _MS_TS
from transforms.partitions.base import _check_future as _check_future
from transforms.partitions.base import _dead_letter as _dead_letter
from transforms.partitions.base import _ms_ts as _ms_ts
from transforms.partitions.base import _Partition as _Partition
from transforms.partitions.base import internal_error as internal_error
from transforms.partitions.base import log as log
from transforms.partitions.base import sane_ingest_ms as sane_ingest_ms
from transforms.partitions.dead_letters import DeadLettersPartition
from transforms.partitions.events import EventsPartition
from transforms.partitions.events import _event_row as _event_row
from transforms.partitions.features_out import _json_default as _json_default
from transforms.partitions.features_out import feature_messages
from transforms.partitions.readings import _QUALITY_CODE as _QUALITY_CODE
from transforms.partitions.readings import ReadingsPartition
from transforms.partitions.readings import _single_as_frame as _single_as_frame
from transforms.partitions.readings import _SingleFrame as _SingleFrame

# The checkpoint names the app and the tests use, kept importable from here.
__all__ = ["CheckpointFailed", "CheckpointJob", "CheckpointResult", "DeadLettersPartition", "EventsPartition",
           "ReadingsPartition", "checkpoint_path", "committed_next_offset", "drop_uncommitted", "feature_messages"]
