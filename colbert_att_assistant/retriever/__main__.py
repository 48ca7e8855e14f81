from colbert_att_assistant.retriever.cli import app

app(prog_name="python -m colbert_att_assistant.retriever")
