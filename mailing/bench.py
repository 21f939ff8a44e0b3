"""`flask bench …`: benchmarks that build their own throw-away data and print one JSON object."""

from __future__ import annotations

from flask.cli import AppGroup

bench = AppGroup("bench", help="Benchmarks; each prints one JSON object as its last line.")
