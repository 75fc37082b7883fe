"""Command-line tools of mmtwins; :mod:`tools.cli` holds their shared
helpers (config checks, one-line errors, reports, distributed set-up)."""
