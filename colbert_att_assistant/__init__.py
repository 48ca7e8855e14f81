"""ColBERT-Att retrieval and a cited-answer assistant for a retailer's customer service.

Subpackages: ``retriever`` (encoder, score, index, LlamaIndex retriever), ``knowledge_base`` (documents, chunking,
ingestion), ``assistant`` (evidence, prompt, chat flow), ``grounding`` (the runtime answer judge), ``webapp`` (the
chat app and its HTTP API), ``evals`` (offline evaluation and grounding reports).
"""

import os

# libgomp, the OpenMP runtime of torch and faiss, keeps an idle worker spinning for 300,000 turns after each parallel
# step (about 3 ms by libgomp's own estimate). On two cores that worker spins through the ONNX Runtime query pass that
# follows a search and takes a core from it; a tenth of that still hands work on between back-to-back steps at once
# (benchmarks/RESULTS.md). libgomp reads this when torch loads: set GOMP_SPINCOUNT before importing torch to choose
# another value.
OPENMP_SPIN_COUNT = "30000"
os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)
