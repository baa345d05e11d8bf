"""``python -m circles.sweep``: run a sweep file."""

from circles.sweep.command import main

raise SystemExit(main())
