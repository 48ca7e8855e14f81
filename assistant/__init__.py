"""The LLM answer generator (issue 5): top passages in, a cited answer or an honest "I don't know" out."""
