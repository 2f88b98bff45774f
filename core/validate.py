"""`python -m core.validate`: the documented command name, kept for scripts that use it; the command is
`core.validation.validate` (see its --help)."""
from core.validation.validate import main

if __name__ == "__main__":
    raise SystemExit(main())
