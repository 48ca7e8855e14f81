from colbert_att_assistant.retriever.training.train import app

app()
