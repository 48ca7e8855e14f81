from retriever.cli import app

app(prog_name="python -m retriever")
