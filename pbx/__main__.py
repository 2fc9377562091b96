"""``python -m pbx``: the same as the ``pbx`` command."""

from __future__ import annotations

from pbx.cli import main

raise SystemExit(main())
