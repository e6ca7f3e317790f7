"""How llama.cpp is built here, and a check that a built server really runs on this machine.

llama.cpp builds for the build machine's CPU by default (GGML_NATIVE). That is unsafe on
machines whose CPU advertises instructions the OS or the hypervisor does not let a process run:
an Intel VM that advertises AMX compiles in `tilezero` and dies with SIGILL at its first matrix
product. llama.cpp's runtime CPU dispatch (GGML_CPU_ALL_VARIANTS) picks its variant from CPUID
alone, so it would pick the same AMX code. The safe build that stays fast: native off, and each
x86 extension the kernel reports in /proc/cpuinfo switched on explicitly -- AVX, AVX2, FMA, F16C,
BMI2, AVX-VNNI, AVX-512 (F/CD/VL/DQ/BW together, plus VBMI, VNNI, BF16) -- with AMX always off.
Other architectures (aarch64) keep llama.cpp's own default.

    python -m selflengthen.engines.llama_build cmake-args          # flags for CMAKE_ARGS
    python -m selflengthen.engines.llama_build check llama-server  # one completion, or one line why not
    python -m selflengthen.engines.llama_build check llamacpp      # the same for llama-cpp-python
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

import httpx

# ggml option -> the /proc/cpuinfo flags that must all be present to switch it on.
X86_OPTIONS: dict[str, tuple[str, ...]] = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    # ggml's GGML_AVX512 compiles with -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
# Never compiled in: a CPU may advertise AMX that the VM or the kernel does not let us execute.
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
NOT_BUILT = ("-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags the kernel reports for the first CPU."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args(cpuinfo: str | None = None, machine: str | None = None) -> list[str]:
    """CMake arguments for a llama.cpp build that runs on this machine and on nothing it cannot run."""
    machine = (machine or platform.machine()).lower()
    args = list(NOT_BUILT)
    if machine not in ("x86_64", "amd64"):
        return args
    flags = cpu_flags(cpuinfo)
    args.append("-DGGML_NATIVE=OFF")
    for option, needs in X86_OPTIONS.items():
        args.append(f"-D{option}={'ON' if all(f in flags for f in needs) else 'OFF'}")
    args += [f"-D{option}=OFF" for option in ALWAYS_OFF]
    return args


def variant(args: list[str]) -> str:
    """A short name for the build, e.g. 'portable x86-64: AVX AVX2 FMA F16C (AMX off)'."""
    on = [a[len("-DGGML_") : -len("=ON")] for a in args if a.startswith("-DGGML_") and a.endswith("=ON")]
    if "-DGGML_NATIVE=OFF" not in args:
        return "llama.cpp's default for this architecture"
    return "x86-64 with " + (" ".join(on) or "no extensions") + " (AMX off)"


def check(preset: str, *, timeout_s: float = 120.0) -> str:
    """Start the server of `preset` ('llama-server' or 'llamacpp') on the embedded GGUF, ask for a few
    tokens, stop it. Returns a one-line description of what answered; raises EngineError otherwise."""
    from selflengthen.config import ServerConfig
    from selflengthen.engines.server import ManagedServer
    from selflengthen.errors import EngineError

    with tempfile.TemporaryDirectory(prefix="selflengthen-check-") as tmp:
        config = ServerConfig(
            managed=True, preset=preset, parallel=1, n_ctx=512, ready_timeout_s=timeout_s, stop_timeout_s=10
        )
        server = ManagedServer(config, _Embedded(), run_dir=tmp)
        try:
            server.start()
            response = httpx.post(
                server.base_url + "/v1/completions",
                json={
                    "model": config.served_model_name,
                    "prompt": "The capital of France is",
                    "max_tokens": 8,
                    "temperature": 0,
                },
                timeout=timeout_s,
                trust_env=False,
            )
            if response.status_code != 200:
                raise EngineError(f"the server answered {response.status_code}: {response.text[:200]}")
            text = response.json()["choices"][0]["text"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise EngineError(
                f"the server started but did not complete: {exc}; log ends:\n{server.log_tail()}"
            ) from None
        finally:
            server.stop()
    return f"{preset} completed {text!r} on the embedded model"


class _Embedded:
    base = "embedded"


def main(argv: list[str]) -> int:
    if argv[:1] == ["cmake-args"]:
        print(" ".join(cmake_args()))
        return 0
    if argv[:1] == ["variant"]:
        print(variant(cmake_args()))
        return 0
    if len(argv) == 2 and argv[0] == "check" and argv[1] in ("llama-server", "llamacpp"):
        from selflengthen.errors import SelfLengthenError

        try:
            print(check(argv[1]))
        except SelfLengthenError as exc:
            print(f"{argv[1]} does not run here: " + str(exc).splitlines()[0], file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
