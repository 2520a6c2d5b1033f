"""Which Keras dtype policy training runs in (`--precision`).

`auto`, the default, trains in mixed bfloat16 only where the hardware computes
bfloat16 natively and float32 everywhere else: on a GPU of compute capability
8.0 or more (NVIDIA Ampere and later, whose tensor cores take bfloat16), or on
a CPU whose flags list AMX (`amx_bf16`) or AVX-512 BF16 (`avx512_bf16`), whose
bfloat16 dot products oneDNN uses. Under PyTorch only AMX counts, and under
JAX neither (their CPU kernels were not measured faster there). A CPU whose
bfloat16 is emulated (AVX2 only) runs bfloat16 kernels far slower than float32
(docs/precision.md has the measurements); an older GPU, or one that reports no
compute capability, keeps float32, and so does a GPU under TensorFlow with
`--jit-compile auto`, which XLA-compiles there and cannot compile mixed
bfloat16. Name a policy to choose.
"""

import dataclasses

from segmentation import backend

AUTO = "auto"
# Weights stay float32 under every policy; "mixed_*" computes in 16 bits, the softmax in float32.
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
CPU_FLAGS_FILE = "/proc/cpuinfo"
# NVIDIA Ampere (A100): the first GPUs whose tensor cores compute bfloat16. On the H200 (9.0) mixed bfloat16
# trained 1.26x (batch 4) to 3.4x (batch 16) faster than float32 (docs/speed.md).
BF16_MIN_COMPUTE_CAPABILITY = (8, 0)
# The CPU flags (Linux's names) of native bfloat16 arithmetic, the first found deciding, and the backends whose
# CPU kernels use each.
AMX_BF16 = "amx_bf16"
AVX512_BF16 = "avx512_bf16"
CPU_BF16_FLAGS = (AMX_BF16, AVX512_BF16)
CPU_BF16_BACKENDS = {
    AMX_BF16: (backend.TENSORFLOW, backend.TORCH),
    AVX512_BF16: (backend.TENSORFLOW,),
}


@dataclasses.dataclass(frozen=True)
class Hardware:
    """The facts `--precision auto` decides on.

    Attributes:
        gpu_capabilities: tuple. The compute capability `(major, minor)` of each GPU the
            Keras backend computes on (None where a GPU reports none); empty without a GPU.
        cpu_bf16_flag: str or None. The CPU flag of native bfloat16 the backend's CPU kernels use
            (`AMX_BF16` or `AVX512_BF16`), None if none (`cpu_bf16_flags`, `CPU_BF16_BACKENDS`).
        backend: str. The Keras backend ("tensorflow", "jax", "torch").
    """

    gpu_capabilities: tuple[tuple[int, int] | None, ...] = ()
    cpu_bf16_flag: str | None = None
    backend: str = backend.TENSORFLOW

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu_capabilities)

    @property
    def gpu_bf16(self) -> bool:
        """Whether every GPU computes bfloat16 fast (compute capability 8.0 or more)."""
        return self.has_gpu and all(capability is not None and capability >= BF16_MIN_COMPUTE_CAPABILITY
                                    for capability in self.gpu_capabilities)

    def describe_bf16(self) -> str:
        """Why mixed bfloat16 pays here, for the log line."""
        if self.has_gpu:
            capabilities = sorted({".".join(map(str, capability)) for capability in self.gpu_capabilities})
            return (f"this GPU (compute capability {', '.join(capabilities)}) computes bfloat16 in its tensor "
                    f"cores, on the {self.backend} backend")
        return (f"this CPU computes bfloat16 natively (its flags list {self.cpu_bf16_flag}), on the {self.backend} "
                "backend")


def cpu_bf16_flags(cpuinfo_path: str = CPU_FLAGS_FILE) -> tuple[str, ...]:
    """The flags of `CPU_BF16_FLAGS` the CPU lists, in that order (Linux; none where it cannot be read).

    Args:
        cpuinfo_path: str. The kernel's CPU description. Defaults to `/proc/cpuinfo`.

    Returns:
        For example `("amx_bf16", "avx512_bf16")` on a Xeon with AMX, `("avx512_bf16",)` on an AMD Zen 4,
        `()` on a CPU with AVX2 only.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    listed = set(line.split(":", 1)[-1].split())
                    return tuple(flag for flag in CPU_BF16_FLAGS if flag in listed)
    except OSError:
        pass
    return ()


def usable_cpu_bf16_flag(flags: tuple[str, ...], backend_name: str) -> str | None:
    """The first of the CPU's bfloat16 `flags` whose kernels the backend uses (`CPU_BF16_BACKENDS`), or None."""
    return next((flag for flag in flags if backend_name in CPU_BF16_BACKENDS[flag]), None)


def resolve_precision(requested: str, jit_compile: str, has_gpu: bool, cpu_bf16: bool,
                      gpu_bf16: bool = False) -> str:
    """The dtype policy to train with.

    Args:
        requested: str. `"auto"` or one of `POLICIES`.
        jit_compile: str. The `--jit-compile` value; XLA cannot compile mixed
            bfloat16 here, so `"on"` keeps `auto` at float32.
        has_gpu: bool. Whether the Keras backend computes on a GPU (then the
            CPU's bfloat16 does not count).
        cpu_bf16: bool. Whether the CPU computes bfloat16 natively for the
            backend (`usable_cpu_bf16_flag`).
        gpu_bf16: bool. Whether the GPUs compute bfloat16 fast (`Hardware.gpu_bf16`).
            Defaults to False.

    Returns:
        One of `POLICIES`.

    Example:

    >>> resolve_precision("auto", "auto", has_gpu=False, cpu_bf16=True)
    'mixed_bfloat16'
    >>> resolve_precision("auto", "on", has_gpu=False, cpu_bf16=True)
    'float32'
    >>> resolve_precision("auto", "auto", has_gpu=True, cpu_bf16=False, gpu_bf16=True)
    'mixed_bfloat16'
    """
    if requested != AUTO:
        return requested
    fast_bf16 = gpu_bf16 if has_gpu else cpu_bf16
    if fast_bf16 and jit_compile != "on":
        return "mixed_bfloat16"
    return "float32"


def detect_hardware() -> Hardware:
    """The GPUs the Keras backend computes on, and the CPU's native bfloat16 where the backend's kernels use it."""
    # Mixed bfloat16 trained faster than float32 on an AMX CPU under TensorFlow (1.8x) and PyTorch (1.2x), on an
    # AMD Zen 4 (avx512_bf16) under TensorFlow (1.9x), and no faster under JAX (docs/precision.md).
    name = backend.name()
    return Hardware(tuple(backend.gpu_compute_capabilities()), usable_cpu_bf16_flag(cpu_bf16_flags(), name), name)


def auto_precision(jit_compile: str = "auto", hardware: Hardware | None = None) -> tuple[str, str]:
    """What `--precision auto` trains in, and why (for the log line; empty for float32).

    Args:
        jit_compile: str. The `--jit-compile` value. Defaults to "auto".
        hardware: Hardware or None. The facts to decide on; None reads this
            machine's (`detect_hardware`). Defaults to None.

    Returns:
        `(policy, reason)`.
    """
    hardware = detect_hardware() if hardware is None else hardware
    if hardware.has_gpu and hardware.backend == backend.TENSORFLOW and jit_compile == "auto":
        # Keras XLA-compiles training on a GPU under TensorFlow, whose XLA refuses the mixed bfloat16 graph.
        jit_compile = "on"
    policy = resolve_precision(AUTO, jit_compile, has_gpu=hardware.has_gpu, cpu_bf16=hardware.cpu_bf16_flag is not None,
                               gpu_bf16=hardware.gpu_bf16)
    return policy, hardware.describe_bf16() if policy != "float32" else ""


def default_precision(jit_compile: str = "auto") -> str:
    """`resolve_precision("auto", ...)` for this machine."""
    return auto_precision(jit_compile)[0]

