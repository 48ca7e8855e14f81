"""Fine-tuning the encoder with the ColBERT-Att score: the loop (`train.py`), its command line (`cli.py`), its
recipe (`config.py`), the data streams (`data.py`), the loss (`loss.py`), the trainable model (`model.py`),
validation (`validation.py`) and the shipped checkpoint forms (`export.py`). Run it with
`python -m colbert_att_assistant.retriever.training`."""
