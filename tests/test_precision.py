"""`--precision auto`: mixed bfloat16 only where the hardware computes it natively."""

import pytest

from segmentation.precision import (
    AMX_BF16,
    AUTO,
    AVX512_BF16,
    POLICIES,
    Hardware,
    auto_precision,
    cpu_bf16_flags,
    resolve_precision,
    usable_cpu_bf16_flag,
)

# Intel Xeon (Sapphire Rapids and later), AMD EPYC Zen 4, AMD EPYC Zen 3 (AVX2 only).
AMX_FLAGS = "flags\t\t: fpu vme avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN4_FLAGS = "flags\t\t: fpu vme avx512f avx512_bf16\n"
AVX2_FLAGS = "flags\t\t: fpu vme avx2 fma f16c\n"


@pytest.mark.parametrize("text, expected", [
    (AMX_FLAGS, (AMX_BF16, AVX512_BF16)),
    (ZEN4_FLAGS, (AVX512_BF16,)),
    (AVX2_FLAGS, ()),
    ("processor : 0\n", ()),
])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    # A flag's name elsewhere in the description does not count.
    cpuinfo.write_text("processor\t: 0\nmodel name\t: some amx_bf16 avx512_bf16 CPU\n" + text)
    assert cpu_bf16_flags(str(cpuinfo)) == expected


def test_an_unreadable_cpu_description_means_no_native_bfloat16(tmp_path):
    assert cpu_bf16_flags(str(tmp_path / "missing")) == ()


@pytest.mark.parametrize(
    "flags, backend, expected",
    [
        ((AMX_BF16, AVX512_BF16), "tensorflow", AMX_BF16),
        ((AVX512_BF16,), "tensorflow", AVX512_BF16),
        ((), "tensorflow", None),
        # PyTorch's CPU kernels were measured faster in bfloat16 with AMX only; JAX's with neither.
        ((AMX_BF16, AVX512_BF16), "torch", AMX_BF16),
        ((AVX512_BF16,), "torch", None),
        ((AMX_BF16, AVX512_BF16), "jax", None),
        ((AVX512_BF16,), "jax", None),
    ],
)
def test_the_backend_decides_which_cpu_flags_count(flags, backend, expected):
    assert usable_cpu_bf16_flag(flags, backend) == expected


@pytest.mark.parametrize(
    "jit_compile, has_gpu, cpu_bf16, expected",
    [
        ("auto", False, True, "mixed_bfloat16"),
        ("off", False, True, "mixed_bfloat16"),
        # XLA cannot compile the mixed bfloat16 gradient of the bilinear upsampling.
        ("on", False, True, "float32"),
        # A CPU with AVX2 only emulates bfloat16, 15x slower than float32 (docs/precision.md).
        ("auto", False, False, "float32"),
        # A GPU without fast bfloat16 (gpu_bf16 False): the CPU's bfloat16 does not count, the book's float32.
        ("auto", True, True, "float32"),
    ],
)
def test_auto_picks_bfloat16_only_where_it_was_measured_to_pay(jit_compile, has_gpu, cpu_bf16, expected):
    assert resolve_precision(AUTO, jit_compile, has_gpu=has_gpu, cpu_bf16=cpu_bf16) == expected


@pytest.mark.parametrize("policy", POLICIES)
def test_a_named_policy_is_kept(policy):
    assert resolve_precision(policy, "auto", has_gpu=False, cpu_bf16=True) == policy
    assert resolve_precision(policy, "auto", has_gpu=True, cpu_bf16=False) == policy


@pytest.mark.parametrize(
    "hardware, jit_compile, expected, reason",
    [
        # The H200 and A100 of bench/gpu.py's kind: tensor cores that take bfloat16.
        (Hardware(gpu_capabilities=((9, 0),), backend="jax"), "auto", "mixed_bfloat16", "compute capability 9.0"),
        (Hardware(gpu_capabilities=((8, 0), (8, 0)), backend="torch"), "auto", "mixed_bfloat16",
         "compute capability 8.0"),
        # Under TensorFlow Keras' "auto" XLA-compiles on a GPU, and TensorFlow's XLA refuses mixed bfloat16.
        (Hardware(gpu_capabilities=((9, 0),), backend="tensorflow"), "auto", "float32", ""),
        (Hardware(gpu_capabilities=((9, 0),), backend="tensorflow"), "off", "mixed_bfloat16", "on the tensorflow"),
        # Volta and Turing (7.x) emulate bfloat16; an AMX CPU beside them does not count.
        (Hardware(gpu_capabilities=((7, 5),), cpu_bf16_flag=AMX_BF16, backend="jax"), "auto", "float32", ""),
        # One slow GPU, or one that reports no capability (an AMD GPU), keeps every replica in float32.
        (Hardware(gpu_capabilities=((9, 0), (7, 0)), backend="jax"), "auto", "float32", ""),
        (Hardware(gpu_capabilities=(None,), backend="torch"), "auto", "float32", ""),
        (Hardware(gpu_capabilities=((9, 0),), backend="jax"), "on", "float32", ""),
        (Hardware(cpu_bf16_flag=AMX_BF16), "auto", "mixed_bfloat16", "its flags list amx_bf16"),
        (Hardware(cpu_bf16_flag=AVX512_BF16), "auto", "mixed_bfloat16",
         "this CPU computes bfloat16 natively (its flags list avx512_bf16), on the tensorflow backend"),
        (Hardware(cpu_bf16_flag=AVX512_BF16), "on", "float32", ""),
        (Hardware(), "auto", "float32", ""),
    ],
)
def test_auto_trains_in_bfloat16_on_a_gpu_that_computes_it_fast(hardware, jit_compile, expected, reason):
    policy, why = auto_precision(jit_compile, hardware)
    assert policy == expected
    assert (reason in why) if reason else why == ""


def test_the_log_line_names_the_gpu_s_compute_capability_and_backend():
    _, why = auto_precision("auto", Hardware(gpu_capabilities=((8, 6),), backend="jax"))
    assert why.startswith("this GPU (compute capability 8.6) computes bfloat16 in its tensor cores")
    assert why.endswith("on the jax backend")
