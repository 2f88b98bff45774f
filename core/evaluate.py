"""`python -m core.evaluate`: the documented command name, kept for scripts that use it; the command is
`core.model.evaluate` (see its --help)."""
from core.model.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
