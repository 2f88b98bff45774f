"""`python -m core.download`: the documented command name, kept for scripts that use it; the command is
`core.data.download` (see its --help)."""
from core.data.download import main

if __name__ == "__main__":
    raise SystemExit(main())
