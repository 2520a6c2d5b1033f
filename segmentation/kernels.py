"""TensorFlow's CPU kernels: oneDNN's, also on the CPUs where TensorFlow leaves them off (project addition).

TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI or BF16, or AMX
(Intel Xeon of recent generations, AMD EPYC Zen 4); on others, an AMD EPYC with AVX2 only for one, it
runs Eigen's. There the command line's training step ran about twice as fast with oneDNN's
(docs/speed.md has the measurements), so every entry point sets `TF_ENABLE_ONEDNN_OPTS=1` before
TensorFlow is imported, unless the user set the variable (`TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen's).
"""

import os
from collections.abc import MutableMapping

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn(environ: MutableMapping[str, str] | None = None) -> None:
    """Asks TensorFlow for its oneDNN CPU kernels unless the user chose (call it before TensorFlow loads).

    Args:
        environ: mapping or None. The environment to set. Defaults to None: `os.environ`.
    """
    environ = os.environ if environ is None else environ
    environ.setdefault(ONEDNN_VARIABLE, "1")
