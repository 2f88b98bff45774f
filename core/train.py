"""`python -m core.train`: the documented command name, kept for scripts that use it; the command is
`core.model.train` (see its --help)."""
from core.model.train import main

if __name__ == "__main__":
    raise SystemExit(main())
