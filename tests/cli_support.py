"""Run the ``gigapulse`` CLI in-process, as a user's shell would, and capture what it printed.

Every command ends in ``SystemExit`` (typer's standalone mode), so a test gets the exit code with the
output instead of an exception; one helper for all CLI tests keeps their conventions the same.
"""

from __future__ import annotations

import pytest

from gigapulse.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``gigapulse *argv``."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err
