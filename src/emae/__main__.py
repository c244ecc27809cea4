"""Allow ``python -m emae``."""

from emae.cli import main

raise SystemExit(main())
