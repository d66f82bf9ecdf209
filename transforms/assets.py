"""The worker's view of the asset model: the compacted ``plant.assets.v1`` folded record by record.

Any Kafka client can write to the asset topic, so the fold must survive whatever it finds there and
never let one bad record poison the model the workers judge every reading against:

- a valid entry is taken under its ``sensor_id`` (whatever the record's key says);
- a tombstone (a null value) keyed by a sensor id retires that sensor, exactly as log compaction
  will once it has run: a worker that starts after compaction must see the same model as one that
  read the tombstone itself;
- anything else (not JSON, a broken entry, a tombstone with no usable key) changes nothing: the
  sensor keeps its last valid entry, or stays unknown, and the record comes back as a dead letter
  with its reason and source position.

No Kafka import here: :func:`transforms.app.load_assets` reads the topic and hands every record
to :meth:`AssetSnapshot.fold`, so all of this is tested on plain bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.contracts import AssetEntry, ContractError, DeadLetter, Reason, decode_asset


@dataclass
class AssetSnapshot:
    """The asset topic read up to some offset: current entries, retired ids and refused records."""

    topic: str
    entries: dict[str, AssetEntry] = field(default_factory=dict)
    #: Sensor ids whose latest record is a tombstone.
    retired: set[str] = field(default_factory=set)
    #: Records that could not be taken, as dead letters (stage ``stream``), in topic order.
    rejected: list[DeadLetter] = field(default_factory=list)

    def fold(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> DeadLetter | None:
        """Take one record of the asset topic; returns its dead letter if it was refused."""
        try:
            if value is None:
                self._retire(key)
                return None
            entry = decode_asset(value)
        except ContractError as err:
            letter = DeadLetter.for_payload(value, err, "stream", self.topic, partition, offset)
            self.rejected.append(letter)
            return letter
        self.entries[entry.sensor_id] = entry
        self.retired.discard(entry.sensor_id)
        return None

    def _retire(self, key: bytes | None) -> None:
        if not key:
            raise ContractError(Reason.EMPTY, "a tombstone without a key retires nothing")
        try:
            sensor_id = bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            raise ContractError(Reason.BAD_VALUE, "a tombstone whose key is not a UTF-8 sensor id") from None
        self.entries.pop(sensor_id, None)
        self.retired.add(sensor_id)

    def apply_to(self, assets: dict[str, AssetEntry]) -> None:
        """Bring a live model (shared with the partitions) up to this snapshot, in place.

        Entries from elsewhere (``--plant FILE.yaml``) stay unless the topic retired them.
        """
        assets.update(self.entries)
        for sensor_id in self.retired:
            assets.pop(sensor_id, None)
