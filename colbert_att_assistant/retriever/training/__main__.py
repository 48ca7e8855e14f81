from colbert_att_assistant.retriever.training.cli import app

app()
