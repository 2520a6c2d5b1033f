"""Which Keras dtype policy training runs in (`--precision`).

`auto`, the default, trains in mixed bfloat16 only where the hardware computes
bfloat16 natively (a CPU with AMX) and float32 everywhere else: a CPU whose
bfloat16 is emulated or partial runs TensorFlow's bfloat16 kernels slower than
float32 (docs/precision.md has the measurements). GPUs keep float32 under
`auto`; name a policy to choose.
"""

import tensorflow as tf

AUTO = "auto"
# Weights stay float32 under every policy; "mixed_*" computes in 16 bits, the softmax in float32.
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
CPU_FLAGS_FILE = "/proc/cpuinfo"


def cpu_has_amx_bf16(cpuinfo_path: str = CPU_FLAGS_FILE) -> bool:
    """Whether the CPU lists the `amx_bf16` flag (Linux; False where it cannot be read).

    Args:
        cpuinfo_path: str. The kernel's CPU description. Defaults to `/proc/cpuinfo`.

    Returns:
        True if a `flags` line names `amx_bf16`.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags") and "amx_bf16" in line.split(":", 1)[-1].split():
                    return True
    except OSError:
        pass
    return False


def resolve_precision(requested: str, jit_compile: str, has_gpu: bool, amx_bf16: bool) -> str:
    """The dtype policy to train with.

    Args:
        requested: str. `"auto"` or one of `POLICIES`.
        jit_compile: str. The `--jit-compile` value; XLA cannot compile mixed
            bfloat16 here, so `"on"` keeps `auto` at float32.
        has_gpu: bool. Whether TensorFlow sees a GPU (then `auto` is float32).
        amx_bf16: bool. Whether the CPU has AMX bfloat16 (`cpu_has_amx_bf16`).

    Returns:
        One of `POLICIES`.

    Example:

    >>> resolve_precision("auto", "auto", has_gpu=False, amx_bf16=True)
    'mixed_bfloat16'
    >>> resolve_precision("auto", "on", has_gpu=False, amx_bf16=True)
    'float32'
    """
    if requested != AUTO:
        return requested
    if amx_bf16 and not has_gpu and jit_compile != "on":
        return "mixed_bfloat16"
    return "float32"


def default_precision(jit_compile: str = "auto") -> str:
    """`resolve_precision("auto", ...)` for this machine."""
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    return resolve_precision(AUTO, jit_compile, has_gpu=has_gpu, amx_bf16=cpu_has_amx_bf16())

