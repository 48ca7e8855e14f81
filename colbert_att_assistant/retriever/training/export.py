"""Writing trained models: a full sentence-transformers / PyLate folder, and the compact shipped form.

Full folder (what `retriever.checkpoint.load_checkpoint` reads as the PyLate layout, and what PyLate's
`models.ColBERT(path)` loads):

    config.json, model.safetensors, tokenizer files     the transformer, at the root (module path "")
    modules.json                                        Transformer + pylate.models.Dense.Dense
    1_Dense/config.json, 1_Dense/model.safetensors      the projection (`linear.weight`); an identity when the
                                                        model has none, since PyLate needs a Dense module
    config_sentence_transformers.json                   markers ("" = none), lengths, query expansion
    sentence_bert_config.json                           max_seq_length
    colbert_att_training.json                           how it was trained (A reading, score, step, base)

Compact folder (`export_compact`): only the backbone tensors that differ from the base checkpoint, stored as
float16 differences (trained - base, which keeps more precision than float16 weights), the projection in
float16, and a manifest with the sha256 of both the base weights and the compact file. The frozen word
embeddings (23 MB in float16) are not in it: they come from the bundled package at load time.
"""

from __future__ import annotations

import json
import logging
import shutil
import string
from pathlib import Path

import torch
from safetensors.torch import save_file

from colbert_att_assistant.retriever.checkpoint import (
    BUNDLED_MODEL_NAME,
    COMPACT_MANIFEST_NAME,
    CompactManifest,
    file_sha256,
    load_checkpoint,
)
from colbert_att_assistant.retriever.errors import CheckpointError
from colbert_att_assistant.retriever.training.model import TrainableColBERT

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "colbert_att_training.json"
DENSE_FOLDER = "1_Dense"
COMPACT_TARGET_BYTES = 25 * 1024 * 1024
PYLATE_DENSE = "pylate.models.Dense.Dense"


def save_model_folder(model: TrainableColBERT, folder: Path, training_info: dict) -> None:
    """Write `model` as a sentence-transformers / PyLate ColBERT folder (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(folder, safe_serialization=True)
    model.encoder.tokenizer.save_pretrained(folder)
    hidden = int(model.backbone.config.hidden_size)
    if model.projection is not None:
        weight = model.projection.weight.detach().float().cpu().contiguous()
    else:
        weight = torch.eye(hidden)
    dense = folder / DENSE_FOLDER
    dense.mkdir(exist_ok=True)
    dense_config = {
        "in_features": int(weight.shape[1]),
        "out_features": int(weight.shape[0]),
        "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity",
    }
    (dense / "config.json").write_text(json.dumps(dense_config, indent=2))
    save_file({"linear.weight": weight}, str(dense / "model.safetensors"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": DENSE_FOLDER, "type": PYLATE_DENSE},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    settings = model.settings
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": settings.document_max_tokens, "do_lower_case": False}, indent=2)
    )
    info = model.checkpoint.info
    st_config = {
        "model_type": "ColBERT",
        "similarity_fn_name": "MaxSim",
        "prompts": {},
        "default_prompt_name": None,
        # PyLate reads "" as no marker; without a key it would add its own "[Q] " / "[D] " tokens.
        "query_prefix": info.query_marker or "",
        "document_prefix": info.document_marker or "",
        "query_length": settings.query_max_tokens,
        "document_length": settings.document_max_tokens,
        "do_query_expansion": bool(model.encoder.query_expansion),
        "attend_to_expansion_tokens": bool(info.attend_to_expansion_tokens),
        "skiplist_words": list(string.punctuation) if settings.skip_document_punctuation else [],
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    (folder / TRAINING_INFO_NAME).write_text(json.dumps(training_info, indent=2, default=str))


def read_training_info(folder: Path) -> dict:
    path = folder / TRAINING_INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def export_compact(model_folder: Path, output: Path, base_model: str | None = None) -> CompactManifest:
    """Write the compact form of a full folder saved by `save_model_folder` into `output`.

    base_model: the checkpoint training started from (default: the one recorded in the folder, else the bundled
    MiniLM). The result loads with `load_checkpoint(output)` and needs that base at load time.
    """
    model_folder, output = Path(model_folder), Path(output)
    trained = load_checkpoint(str(model_folder))
    recorded = read_training_info(model_folder)
    base_name = base_model or recorded.get("base_model") or BUNDLED_MODEL_NAME
    base = load_checkpoint(base_name)
    base_state = base.backbone.state_dict()
    stored: dict[str, torch.Tensor] = {}
    deltas = []
    for name, tensor in trained.backbone.state_dict().items():
        if name not in base_state or base_state[name].shape != tensor.shape:
            raise CheckpointError(f"{model_folder}: tensor {name} does not fit the base model {base_name}.")
        if torch.equal(tensor, base_state[name]):
            continue
        deltas.append(name)
        stored[f"backbone.{name}"] = (tensor.float() - base_state[name].float()).half().contiguous()
    projection = trained.projection
    if projection is not None and not recorded.get("trained_projection", True):
        projection = None  # the identity written for PyLate only
    if projection is not None:
        stored["projection.weight"] = projection.weight.detach().half().contiguous()
    output.mkdir(parents=True, exist_ok=True)
    weights_file = output / "compact.safetensors"
    save_file(stored, str(weights_file))
    info = trained.info
    manifest = CompactManifest(
        base_model=base_name,
        base_weights_sha256=base.weights_sha256,
        weights_sha256=file_sha256(weights_file),
        backbone_deltas=deltas,
        projection_shape=tuple(projection.weight.shape) if projection is not None else None,
        query_marker=info.query_marker or None,
        document_marker=info.document_marker or None,
        query_expansion=info.query_expansion,
        attend_to_expansion_tokens=info.attend_to_expansion_tokens,
        query_max_tokens=info.query_max_tokens,
        document_max_tokens=info.document_max_tokens,
    )
    (output / COMPACT_MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    if (model_folder / TRAINING_INFO_NAME).is_file():
        shutil.copy(model_folder / TRAINING_INFO_NAME, output / TRAINING_INFO_NAME)
    size = weights_file.stat().st_size
    if size > COMPACT_TARGET_BYTES:
        logger.warning(
            "Compact export is %.1f MB, above the %.0f MB target (are the word embeddings trained? "
            "--freeze-embeddings keeps them out).",
            size / 1e6,
            COMPACT_TARGET_BYTES / 1e6,
        )
    return manifest
