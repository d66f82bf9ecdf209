"""The worker's Kafka consumer waits at most our fetch wait, not faust-streaming's fixed 1.5 s."""

from __future__ import annotations

import asyncio

from transforms.faust_transport import App, Transport


def test_worker_consumer_uses_the_configured_fetch_wait():
    async def build() -> int:
        app = App("gigapulse-test-fetch", broker="kafka://127.0.0.1:1", fetch_max_wait_ms=123, web_enabled=False)
        assert isinstance(app.transport, Transport)
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)  # built, not started: no connection
        return consumer._fetch_max_wait_ms

    assert asyncio.run(build()) == 123
