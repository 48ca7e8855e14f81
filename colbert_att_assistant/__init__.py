"""ColBERT-Att retrieval and a cited-answer assistant for a retailer's customer service.

Subpackages: ``retriever`` (encoder, score, index, LlamaIndex retriever), ``knowledge_base`` (documents, chunking,
ingestion), ``assistant`` (evidence, prompt, chat flow), ``grounding`` (the runtime answer judge), ``webapp`` (the
chat app and its HTTP API), ``evals`` (offline evaluation and grounding reports).
"""
