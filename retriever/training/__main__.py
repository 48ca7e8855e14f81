from retriever.training.train import app

app()
