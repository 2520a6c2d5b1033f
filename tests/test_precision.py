"""`--precision auto`: mixed bfloat16 only where the CPU computes it natively."""

import pytest

from segmentation.precision import AUTO, POLICIES, cpu_has_amx_bf16, resolve_precision

AMX_FLAGS = "flags\t\t: fpu vme avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN_FLAGS = "flags\t\t: fpu vme avx512f avx512_bf16\n"


@pytest.mark.parametrize("text, expected", [(AMX_FLAGS, True), (ZEN_FLAGS, False), ("processor : 0\n", False)])
def test_amx_is_read_from_the_cpu_flags(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: some amx_bf16 CPU\n" + text)
    assert cpu_has_amx_bf16(str(cpuinfo)) is expected


def test_an_unreadable_cpu_description_means_no_amx(tmp_path):
    assert cpu_has_amx_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize(
    "jit_compile, has_gpu, amx_bf16, expected",
    [
        ("auto", False, True, "mixed_bfloat16"),
        ("off", False, True, "mixed_bfloat16"),
        # XLA cannot compile the mixed bfloat16 gradient of the bilinear upsampling.
        ("on", False, True, "float32"),
        # avx512_bf16 without AMX ran 15x slower than float32 (docs/precision.md).
        ("auto", False, False, "float32"),
        # Not measured on a GPU: the book's float32.
        ("auto", True, True, "float32"),
    ],
)
def test_auto_picks_bfloat16_only_where_it_was_measured_to_pay(jit_compile, has_gpu, amx_bf16, expected):
    assert resolve_precision(AUTO, jit_compile, has_gpu=has_gpu, amx_bf16=amx_bf16) == expected


@pytest.mark.parametrize("policy", POLICIES)
def test_a_named_policy_is_kept(policy):
    assert resolve_precision(policy, "auto", has_gpu=False, amx_bf16=True) == policy
    assert resolve_precision(policy, "auto", has_gpu=True, amx_bf16=False) == policy
