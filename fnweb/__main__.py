"""``python -m fnweb COMMAND ...``: the console scripts without installing them.

COMMAND is buildtemplates, fnsft, fnexperiment or explain.
"""

import importlib
import sys

COMMANDS = {"buildtemplates": "buildtemplates", "fnsft": "fnsft", "fnexperiment": "experiment", "explain": "explain"}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m fnweb {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    module = importlib.import_module(f"fnweb.cli.{COMMANDS[sys.argv[1]]}")
    return module.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
