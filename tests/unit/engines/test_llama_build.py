"""llama.cpp's build flags (portable: nothing the CPU advertises but cannot run, AMX never), how a
server's death is described, and the log tail of the current attempt only."""

from __future__ import annotations

import signal
import sys

import pytest

from selflengthen.config import ServerConfig
from selflengthen.engines.llama_build import cmake_args, cpu_flags, variant
from selflengthen.engines.server import ManagedServer, describe_exit, exit_advice
from selflengthen.errors import ServerStartError

INTEL_AMX_VM = (
    "processor\t: 0\nflags\t\t: fpu sse4_2 avx f16c fma bmi2 avx2 "
    "avx512f avx512dq avx512cd avx512bw avx512vl "
    "avx512vbmi avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8 hypervisor\n"
)
AMD_AVX2 = "flags\t\t: fpu sse4_2 avx f16c fma bmi2 avx2 hypervisor\nflags\t\t: ignored second cpu\n"


def options(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args if a.startswith("-DGGML_"))


def test_intel_with_amx_gets_avx512_and_never_amx():
    opts = options(cmake_args(INTEL_AMX_VM, "x86_64"))
    assert opts["GGML_NATIVE"] == "OFF"
    for on in (
        "AVX",
        "AVX2",
        "FMA",
        "F16C",
        "BMI2",
        "AVX_VNNI",
        "AVX512",
        "AVX512_VBMI",
        "AVX512_VNNI",
        "AVX512_BF16",
    ):
        assert opts[f"GGML_{on}"] == "ON", on
    assert opts["GGML_AMX_TILE"] == opts["GGML_AMX_INT8"] == opts["GGML_AMX_BF16"] == "OFF"


def test_amd_with_avx2_only_switches_avx512_off_explicitly():
    # ggml switches its x86 options on by default once native is off: each one must be set
    opts = options(cmake_args(AMD_AVX2, "x86_64"))
    assert opts["GGML_AVX2"] == opts["GGML_FMA"] == opts["GGML_F16C"] == "ON"
    assert opts["GGML_AVX512"] == opts["GGML_AVX512_VNNI"] == opts["GGML_AVX_VNNI"] == "OFF"
    assert variant(cmake_args(AMD_AVX2, "x86_64")) == "x86-64 with SSE42 AVX AVX2 FMA F16C BMI2 (AMX off)"


def test_avx512_needs_all_five_subsets_ggml_compiles_with():
    partial = AMD_AVX2.replace("avx2", "avx2 avx512f avx512cd avx512vl avx512dq")  # no avx512bw
    assert options(cmake_args(partial, "x86_64"))["GGML_AVX512"] == "OFF"


def test_other_architectures_keep_llama_cpp_defaults():
    args = cmake_args("Features\t: fp asimd sve\n", "aarch64")
    assert not any(a.startswith("-DGGML_") for a in args)
    assert "-DLLAMA_BUILD_TESTS=OFF" in args
    assert variant(args) == "llama.cpp's default for this architecture"


def test_cpu_flags_reads_the_first_flags_line():
    assert "avx2" in cpu_flags(AMD_AVX2) and "ignored" not in cpu_flags(AMD_AVX2)
    assert cpu_flags("") == set()


def test_exit_descriptions_name_the_signal_and_what_to_do():
    assert describe_exit(3) == "status 3"
    assert describe_exit(-signal.SIGILL) == "killed by SIGILL: illegal instruction"
    assert describe_exit(-signal.SIGSEGV).startswith("killed by SIGSEGV: segmentation fault")
    assert "rebuild llama.cpp" in exit_advice(-signal.SIGILL) and "transformers" in exit_advice(
        -signal.SIGSEGV
    )
    assert "out-of-memory" in exit_advice(-signal.SIGKILL)
    assert exit_advice(1) == ""


def test_a_crash_at_start_names_the_signal_and_shows_only_this_attempts_log(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(
        "import os, signal, sys\n"
        "print('attempt', sys.argv[1], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGILL)\n"
    )
    config = ServerConfig(managed=True, command=f"{sys.executable} {script} {{port}}", ready_timeout_s=30)
    server = ManagedServer(config, run_dir=tmp_path)
    first_port = server.port
    with pytest.raises(ServerStartError) as first:
        server.start()
    assert first.value.cause == "killed by SIGILL: illegal instruction"
    assert f"attempt {first_port}" in first.value.log_tail
    server.port = first_port + 1  # a second attempt, as a restart would make
    with pytest.raises(ServerStartError) as second:
        server.start()
    assert f"attempt {first_port + 1}" in second.value.log_tail
    assert f"attempt {first_port}\n" not in second.value.log_tail + "\n"  # the old attempt's lines stay out
    log = (tmp_path / "logs" / "server.log").read_text()
    assert log.count("selflengthen starts:") == 2  # the whole history stays in the file
