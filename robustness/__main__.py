"""``python -m robustness`` runs the CLI."""

from robustness.cli import main

raise SystemExit(main())
