"""docs/architecture.md stays true: the files it names exist, and a run does not import the tools or benchmarks."""

import os
import re
import subprocess
import sys

from conftest import ROOT

MAP = os.path.join(ROOT, "docs", "architecture.md")


def test_every_file_the_map_names_exists():
    text = open(MAP, encoding="utf-8").read()
    named = set(re.findall(r"`([\w/.-]+\.py)`", text)) | set(re.findall(r"`([\w/-]+/)`", text))
    assert len(named) > 30
    missing = sorted(path for path in named if not os.path.exists(os.path.join(ROOT, path)))
    assert not missing


def test_the_program_does_not_import_the_tools_or_the_benchmarks():
    code = ("import sys; from segmentation import cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('segmentation.tools', 'bench'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
