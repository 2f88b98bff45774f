"""`python -m core.dataset_stats`: the documented command name, kept for scripts that use it; the command is
`core.eda.dataset_stats` (see its --help)."""
from core.eda.dataset_stats import main

if __name__ == "__main__":
    raise SystemExit(main())
