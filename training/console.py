"""The ``geodemo`` console script (``pip install .``): ``geodemo app`` serves the app, and every other
subcommand is ``python -m training``'s own (``geodemo train …`` = ``python -m training train …``)."""

from __future__ import annotations

import sys

APP_HELP = """usage: geodemo {app,train,evaluate,predict,validate-data,...} ...

  geodemo app [--host H] [--port P]   serve the app in the browser (the same as `python app.py`)
  geodemo <command> ...               the training commands (= `python -m training <command>`):
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``app`` to geodemo.ui.serve and everything else to training.__main__."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["app"]:
        from geodemo.ui.serve import main as serve

        return serve(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(APP_HELP)
        argv = ["--help"]
    from training.__main__ import main as training_main

    try:
        return training_main(argv)
    except SystemExit as done:  # argparse's --help and usage errors
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 2


if __name__ == "__main__":
    sys.exit(main())
