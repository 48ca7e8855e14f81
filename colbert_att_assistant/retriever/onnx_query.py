"""The query forward pass (`QueryGraph`) exported to ONNX and run by ONNX Runtime.

On a 2-core CPU a 32-piece MiniLM pass spends much of its time in Python and in the threads torch wakes for each
small operator; ONNX Runtime runs the same graph as one call. The exported file is cached per weights, attention
strategy and torch version under ~/.cache/colbert-att-assistant/onnx/, written atomically so that concurrent
processes never read half a file. `int8` quantises the matrix weights dynamically (onnxruntime.quantization):
faster, but its token vectors are further from the reference (benchmarks/RESULTS.md, query encoding).

The packages (onnxruntime, and onnx for the int8 quantisation) are project dependencies; without them the "auto"
query backend falls back to torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from colbert_att_assistant.retriever.errors import ColBERTAttError
from colbert_att_assistant.retriever.query_graph import QueryGraph

logger = logging.getLogger(__name__)

OnnxPrecision = Literal["float32", "int8"]
# Bumped when the exported graph changes, so that stale cached files are not reused.
_GRAPH_VERSION = 2


def onnx_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "colbert-att-assistant" / "onnx"


def onnx_export_available() -> bool:
    """Whether ONNX Runtime and onnx are installed (torch's TorchScript exporter needs nothing more)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ColBERTAttError(
            "The onnxruntime query backend needs onnxruntime and onnx (project dependencies): "
            "pip install -e . (or set query_backend to 'torch')."
        ) from error
    return onnxruntime


def _graph_key(weights_sha256: str, graph: QueryGraph) -> str:
    parts = [weights_sha256, graph.strategy.value, str(graph.projection is not None), torch.__version__]
    source = "|".join([*parts, str(_GRAPH_VERSION)])
    return hashlib.sha256(source.encode()).hexdigest()[:20]


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def export_query_graph(graph: QueryGraph, path: Path) -> None:
    """Export with dynamic batch and length; the example has two rows of different lengths so that neither is
    specialised. The TorchScript exporter takes about 2 s here where the dynamo one took 40-110 s, for the same
    vectors. The whole model goes into one file (MiniLM is 90 MB), written then renamed into place."""
    example_ids = torch.full((2, 8), 101, dtype=torch.long)
    example_mask = torch.ones((2, 8), dtype=torch.long)
    example_mask[1, 5:] = 0
    dynamic = {0: "batch", 1: "length"}
    staging = _atomic_target(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes, not actionable here
            torch.onnx.export(
                graph.eval(),
                (example_ids, example_mask),
                str(staging),
                input_names=["input_ids", "attention_mask"],
                output_names=["vectors", "weights"],
                dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic},
                opset_version=17,
                dynamo=False,
            )
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def quantize_int8(source: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = _atomic_target(path)
    try:
        quantize_dynamic(str(source), str(staging), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def cached_query_model(graph: QueryGraph, weights_sha256: str, precision: OnnxPrecision) -> Path:
    """The ONNX file for this graph, exported (and quantised) on first use."""
    _import_onnxruntime()
    key = _graph_key(weights_sha256, graph)
    float_path = onnx_cache_dir() / f"query-{key}-float32.onnx"
    if not float_path.is_file():
        logger.info("Exporting the query encoder to ONNX (once per model): %s", float_path)
        export_query_graph(graph, float_path)
    if precision == "float32":
        return float_path
    int8_path = onnx_cache_dir() / f"query-{key}-int8.onnx"
    if not int8_path.is_file():
        quantize_int8(float_path, int8_path)
    return int8_path


class OnnxQueryRunner:
    """An ONNX Runtime session over the exported `QueryGraph`: same inputs and outputs, numpy in and out."""

    def __init__(self, model_path: Path, threads: int) -> None:
        onnxruntime = _import_onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Workers spin between the graph's ~440 small steps (waking a sleeping one costs more than the step) and
        # stop when the pass returns, so that an idle server takes no CPU from the LLM or other processes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.model_path = model_path
        self.threads = threads
        self.session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vectors, weights = self.session.run(
            None,
            {
                "input_ids": input_ids.numpy().astype(np.int64, copy=False),
                "attention_mask": attention_mask.numpy().astype(np.int64, copy=False),
            },
        )
        return torch.from_numpy(vectors), torch.from_numpy(weights)
