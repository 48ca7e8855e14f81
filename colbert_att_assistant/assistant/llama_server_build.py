"""Build llama.cpp's own `llama-server` from the llama.cpp that llama-cpp-python vendors, once per machine.

llama-cpp-python's Python server (`python -m llama_cpp.server`) keeps one model context behind a lock, so it
answers one request at a time. llama.cpp's C++ server decodes several requests in one batch (parallel slots,
continuous batching), but llama-cpp-python does not build it. Building it from the same sdist gives the same
llama.cpp, the same kernels, as the embedded backend, and needs nothing beyond PyPI and a C++ toolchain.

    python -m colbert_att_assistant.assistant.llama_server_build          # about 6-8 minutes on 2 cores, then cached

The binary lands in `<cache>/llama-server/llama-cpp-python-<version>/llama-server` (cache: see
`colbert_att_assistant.assistant.bundled_models.default_cache_dir`); later calls return at once.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from colbert_att_assistant.assistant.bundled_models import default_cache_dir
from colbert_att_assistant.assistant.errors import LLMBackendError

BINARY_NAME = "llama-server"
BUILD_COMMAND = "python -m colbert_att_assistant.assistant.llama_server_build"

# Static, CPU-only, no network features and no web UI: the assistant only needs the OpenAI-compatible API.
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
]


def llama_cpp_python_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError as exc:
        raise LLMBackendError("llama-cpp-python is not installed: pip install -e .") from exc


def cached_binary_path(cache_dir: Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "llama-server" / f"llama-cpp-python-{llama_cpp_python_version()}" / BINARY_NAME


def _run(command: list[str], cwd: Path, log: Path) -> None:
    with log.open("ab") as handle:
        handle.write(f"\n$ {' '.join(command)}\n".encode())
        handle.flush()
        result = subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise LLMBackendError(f"Building llama-server failed at `{' '.join(command[:3])} ...` (log {log}):\n{tail}")


def _source_tree(work: Path, log: Path) -> Path:
    """llama.cpp's source as vendored by the installed llama-cpp-python version, from its sdist on PyPI."""
    version = llama_cpp_python_version()
    download = work / "sdist"
    _run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check"),
            *("--no-binary", "llama-cpp-python", "-d", str(download), f"llama-cpp-python=={version}"),
        ],
        cwd=work,
        log=log,
    )
    archives = sorted(download.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        raise LLMBackendError(f"pip download gave no llama-cpp-python {version} sdist in {download} (log {log}).")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(work / "src", filter="data")
    roots = list((work / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not roots or not (roots[0] / "tools" / "server").is_dir():
        raise LLMBackendError(f"The llama-cpp-python {version} sdist has no vendor/llama.cpp/tools/server.")
    return roots[0]


def build_llama_server(cache_dir: Path | None = None, jobs: int | None = None, force: bool = False) -> Path:
    """Return the cached `llama-server`, building it first if needed (minutes; needs cmake and a C++ compiler)."""
    target = cached_binary_path(cache_dir)
    if target.is_file() and not force:
        return target
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise LLMBackendError(
                f"Building llama-server needs {tool!r} on PATH (Debian: apt-get install cmake g++), "
                "or point llm_server.binary at an existing llama-server."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    log = target.parent / "build.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="llama-server-build-") as scratch:
        work = Path(scratch)
        source = _source_tree(work, log)
        build = work / "build"
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_OPTIONS], cwd=work, log=log)
        jobs = jobs or os.cpu_count() or 1
        _run(
            ["cmake", "--build", str(build), "--target", BINARY_NAME, "--config", "Release", "-j", str(jobs)],
            cwd=work,
            log=log,
        )
        built = next(build.rglob(BINARY_NAME), None)
        if built is None or not built.is_file():
            raise LLMBackendError(f"The build finished but produced no {BINARY_NAME} binary (log {log}).")
        # Copy next to the target and rename, so that a half-written binary is never found by a later start.
        staged = target.with_name(f".{BINARY_NAME}.partial")
        shutil.copy2(built, staged)
        os.replace(staged, target)
    return target


def main() -> None:
    force = "--force" in sys.argv[1:]
    target = cached_binary_path()
    if target.is_file() and not force:
        print(f"llama-server already built: {target}")
        return
    print(f"Building llama-server from llama-cpp-python {llama_cpp_python_version()}'s llama.cpp (several minutes)...")
    print(build_llama_server(force=force))


if __name__ == "__main__":
    main()
