"""Small argparse helpers shared by the command-line entry points."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr, exit code 2, no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def csv_list(cast):
    """``type=`` for comma-separated lists: ``--lengths 1,2,5`` -> [1.0, 2.0, 5.0]."""

    def parse(text: str):
        try:
            return [cast(x) for x in str(text).split(",") if x.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from e

    return parse
