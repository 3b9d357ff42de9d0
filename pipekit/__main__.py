"""``python -m pipekit``: the ``pipekit`` command (what processes pipekit starts itself use)."""

from .cli import main

if __name__ == "__main__":
    main()
