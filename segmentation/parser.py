"""The command line of chapter 12, built from the options' declarations (`config.RunConfig`).

The book's flags (its `model_utils.parser`) keep their names and defaults; the added ones follow in
their groups. The parser's `prog` is the program's name in every line it prints: its own errors, one
line each, have the format of the program's (`errors.report_error`), `fcn-12.3.1.py: error: <message>`.
"""

import argparse
from typing import NoReturn

from segmentation.config import listed, options
from segmentation.errors import EXIT_BAD_INPUT

PROGRAM = "fcn-12.3.1.py"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, without the usage block above them."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; --help lists the options.\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every option `config.RunConfig` declares, in its `--help` groups.

    An option used with some actions only says so at the start of its help. The parser's `prog`, the
    entry script's name, is what the error lines and the printed `--resume` command use.
    """
    parser = OneLineParser(
        prog=PROGRAM, description="FCN with a ResNet v2 backbone for semantic segmentation (chapter 12).",
    )
    groups = {}
    for name, declaration in options().items():
        metadata = declaration.metadata
        if metadata["group"] not in groups:
            groups[metadata["group"]] = parser.add_argument_group(metadata["group"])
        help_text = metadata["help"]
        if metadata["used_with"]:
            help_text = f"with {listed(metadata['used_with'])}: {help_text}"
        # A repeated option collects what is given; `RunConfig.from_namespace` puts in its default.
        repeated = metadata["argparse"].get("action") == "append"
        groups[metadata["group"]].add_argument(*metadata["flags"], dest=name, help=help_text,
                                               default=None if repeated else declaration.default,
                                               **metadata["argparse"])
    return parser
