"""``python -m gigapulse.cli``: what the tests and the demo's stream workers run."""

from gigapulse.cli import main

main()
