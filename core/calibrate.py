"""`python -m core.calibrate`: the documented command name, kept for scripts that use it; the command is
`core.model.calibrate` (see its --help)."""
from core.model.calibrate import main

if __name__ == "__main__":
    raise SystemExit(main())
