"""Faust's Kafka transport, with the consumer's fetch wait under our control.

faust-streaming builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting to change
it. aiokafka leaves out of its next fetch request every partition whose fetched records are still
buffered, so that request often names only idle partitions (the dead-letter topic, a quiet events
partition): the broker holds it up to the full wait, and the busy partitions' new records wait with
it. Measured with ``gigapulse bench freshness``: a median of about 1 s between a reading's Kafka
timestamp and the worker taking it, most of the end-to-end latency. A short wait costs a few small
fetch requests per second on an idle topic.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by the fetcher aiokafka creates in start(), which has not run yet.
        consumer._fetch_max_wait_ms = int(self.app.gigapulse_fetch_max_wait_ms)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """The aiokafka transport with :class:`_Consumer`."""

    Consumer = _Consumer


class App(faust.App):
    """A Faust app on :class:`Transport`; ``fetch_max_wait_ms`` bounds how long a fetch may wait for data."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 100, **kwargs: Any):
        self.gigapulse_fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)
