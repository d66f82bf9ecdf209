"""What every command shares: the root app, the consoles, one-line user errors, logging and its filters,
and the small helpers several sections use (bootstrap servers, reachability, progress bars, parsing).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="gigapulse",
    help="gigapulse: battery-plant data from the floor to Kafka, a Parquet lake and DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console(stderr=True)
out = Console(soft_wrap=True)
log = logging.getLogger("gigapulse")


class UserError(Exception):
    """An error the user can act on; printed as one line."""


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redact_secrets)
    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    logging.getLogger("kafka.cluster").addFilter(_closed_client_refresh)
    logging.getLogger("kafka.net.selector").addFilter(_closed_client_close_race)
    logging.getLogger("aiokafka.consumer.group_coordinator").addFilter(_routine_to_info)
    logging.getLogger("mode.timers").addFilter(_routine_to_info)
    logging.getLogger("kafka.net.sasl.scram").addFilter(_scram_in_the_clear)
    for name in ("kafka.net.transport", "kafka.net.connection", "kafka.net.manager"):
        logging.getLogger(name).addFilter(_connection_error_without_traceback)
    outage = _OutageThrottle()
    for name in ("aiokafka", "aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator",
                 "aiokafka.producer.sender"):
        logging.getLogger(name).addFilter(outage)


def _closed_client_refresh(record: logging.LogRecord) -> bool:
    """Drop kafka-python's ERROR for a metadata refresh cancelled because its client was closed.

    kafka-python 3.0 logs "Metadata refresh: failed Cancelled" when a short-lived consumer (the
    asset model and end-offset reads) is closed with a refresh in flight; nothing failed.
    """
    return not record.getMessage().endswith("failed Cancelled")


def _redact_secrets(record: logging.LogRecord) -> bool:
    """Replace any Kafka password this process uses by ``***`` in the line (kafka-python's admin client logs
    its whole configuration at DEBUG, and a library's error may quote what it was given)."""
    security = sys.modules.get("ingestion.security")
    if security is None or not security._SECRETS:
        return True
    msg = record.getMessage()
    clean = security.redact(msg)
    if clean != msg:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None and security.redact(str(record.exc_info[1])) != str(
            record.exc_info[1]):
        record.exc_info, record.exc_text = None, None  # a traceback quoting a secret: the line alone
    return True


def _scram_in_the_clear(record: logging.LogRecord) -> bool:
    """Drop kafka-python's warning that SCRAM "exchanges credentials in the clear" on SASL_PLAINTEXT.

    SCRAM never sends the password (only proofs derived from it and fresh nonces); what is in the clear
    is the traffic after the login, which docs/security.md says (use SASL_SSL off loopback). Kept with -v.
    """
    return not (record.getMessage().startswith("Exchanging credentials in the clear")
                and not logging.getLogger().isEnabledFor(logging.DEBUG))


def _closed_client_close_race(record: logging.LogRecord) -> bool:
    """Drop kafka-python's ERROR and traceback for a task its own IO thread was still running at close.

    kafka-python 3.0.12 (the newest) closes a short-lived consumer's pending tasks from the closing
    thread; when its IO thread is inside one of them at that moment, ``coro.close()`` raises
    "generator already executing" and the error is logged with a traceback, although the consumer
    is gone either way and every record it returned was already read. About one start in 25 of a
    stream worker showed it. Any other error while closing is kept.
    """
    exc = record.exc_info[1] if record.exc_info else None
    return not (record.getMessage() == "Error closing coroutine for cancelled task"
                and isinstance(exc, ValueError) and "generator already executing" in str(exc))


#: Messages the stream worker's libraries log as WARNING or ERROR for things that happen in every healthy
#: run: the group coordinator not elected yet on a fresh broker or group (aiokafka retries the lookup),
#: a rebalance while workers join, and mode's note that the 0.1 s flush timer ran late while a checkpoint
#: was being prepared (the next tick catches up; nothing is skipped).
_ROUTINE = (
    "Group Coordinator Request failed: ",
    "Marking the coordinator dead ",
    "Heartbeat failed for group %s because it is rebalancing",
    "Timer %s is overlapping ",
)


def _routine_to_info(record: logging.LogRecord) -> bool:
    """Log the routine messages above as INFO: shown with --verbose or --loglevel info, hidden by default.

    A coordinator lookup that failed for good (not retriable) keeps its level: aiokafka raises then.
    """
    msg = str(record.msg)
    if record.levelno > logging.INFO and msg.startswith(_ROUTINE):
        err = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if msg.startswith("Group Coordinator") and not getattr(err, "retriable", False):
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger().isEnabledFor(logging.INFO)
    return True


def _connection_error_without_traceback(record: logging.LogRecord) -> bool:
    """kafka-python logs a dropped connection (the broker died or restarted) with the socket's
    traceback. The one-line message says all an operator needs; the traceback is kept with -v."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, OSError) and not logging.getLogger().isEnabledFor(logging.DEBUG):
        record.exc_info, record.exc_text = None, None
    return True


class _OutageThrottle(logging.Filter):
    """While the broker is away, aiokafka logs each failed connect, fetch and metadata refresh at ERROR,
    several times a second per client: thousands of lines for a 20 s restart. Each of those messages is
    let through once per ``every_s`` with a count of what was held back, so the log still shows the
    outage, when it started and that it goes on, and stays readable. Any other message passes.
    """

    MESSAGES = ("Unable connect to node with id ", "Unable to update metadata from ", "Failed fetch messages from ",
                "Unable to request metadata from ", "Group Coordinator Request failed: ")

    def __init__(self, every_s: float = 30.0):
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if not msg.startswith(self.MESSAGES):
            return True
        now = time.monotonic()
        last, held = self._last.get(msg, (-1e9, 0))
        if now - last < self.every_s:
            self._last[msg] = (last, held + 1)
            return False
        self._last[msg] = (now, 0)
        if held:
            record.msg = f"{msg} (and {held} more like it in the last {now - last:.0f} s; the client keeps retrying)"
        return True


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


# Shared by several sections.

BootstrapOpt = Annotated[str | None, typer.Option(
    "--bootstrap", help="Kafka bootstrap servers (env GIGAPULSE_BOOTSTRAP_SERVERS, default 127.0.0.1:9092).")]


def _bootstrap(value: str | None) -> str:
    """The bootstrap servers; also where a Kafka command reads its security settings (GIGAPULSE_KAFKA_*),
    once, as it starts: a bad one is reported before anything connects, and every client takes them."""
    from ingestion.security import active
    from ingestion.settings import KafkaSettings

    active()
    return value or KafkaSettings().bootstrap_servers


def _reachable(servers: str) -> None:
    """Fail in seconds with one line when no bootstrap server answers, or when it refuses this process's
    login, before any Kafka client retries for 30."""
    from ingestion.reachability import check_reachable
    from ingestion.security import active, check_credentials
    from ingestion.settings import KafkaSettings

    timeout = KafkaSettings().connect_timeout_s
    if active().security_protocol == "PLAINTEXT":
        check_reachable(servers, timeout)
    else:
        check_credentials(servers, active(), timeout)


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False, disable=not console.is_terminal and
                    not os.environ.get("GIGAPULSE_PROGRESS"))


def _parse(fn, text: str, what: str):
    try:
        return fn(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=what) from None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def fetch_status(host: str, port: int, what: str, timeout: float) -> tuple[str, dict]:
    """The ``/status`` document of a health endpoint (a stream worker's or a bridge's), or one line
    saying that nothing answers as ``what`` at that address."""
    import json
    import urllib.error
    import urllib.request

    url = f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return url, json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"no {what} answers at {url}: {getattr(exc, 'reason', exc)}") from None
