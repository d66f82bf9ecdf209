"""Factory connectors: bridges from plant protocols (Modbus TCP, OPC UA, MQTT / Sparkplug B) into Kafka.

Every bridge reads its source and hands each sample to one :class:`~ingestion.bridges.sink.BridgeSink`,
which batches the samples into the simulator's frames (one per gateway and flush), journals them on disk
(:mod:`ingestion.bridges.buffer`) and sends them with the platform's producer settings (acks=all,
idempotence). While Kafka is away the journal grows, bounded in bytes; when it comes back the journal is
sent in order before anything newer. The bridges themselves only translate: a protocol's addresses are in
:mod:`schemas.addresses`, their YAML configuration in :mod:`ingestion.bridges.config`, and their run-time
settings in :mod:`ingestion.bridges.settings`. docs/connectors.md walks through them.
"""
