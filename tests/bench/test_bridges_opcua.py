"""The OPC UA bridge bench, small: its server child, its accounting, its report."""

from __future__ import annotations

from gigapulse.bench.bridges_opcua import OpcUaBenchOptions, run_bridges_opcua


def test_small_run_accounts_for_every_change():
    report = run_bridges_opcua(OpcUaBenchOptions(nodes=50, rate_hz=2.0, duration_s=2.0,
                                                 publishing_interval_ms=200))
    (run,) = report["runs"]
    assert run["subscribed"] == 50 and run["written"] == 50 * 4
    assert (run["received"], run["missed"], run["duplicated"]) == (200, 0, 0)
    assert report["targets"]["missed_changes"]["met"]
    assert "| 50 | 2 Hz | 2 s | 200 | 200 | 0 | 0 |" in report["table"]
