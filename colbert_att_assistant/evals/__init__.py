"""Offline evaluation, reports and calibration: nothing here runs inside the chat app.

Retrieval side by side on BEIR sets (`retrieval.py`, with the dense baseline in `baselines.py`); the grounding judge
on WixQA and its calibration fit (`grounding_wixqa.py`, `perturb.py`); grounding reports over the assistant's
answers (`grounding_report.py` asks and judges, `grounding_summary.py` totals and writes, `faithfulness.py` adds
LlamaIndex's evaluator); the assistant's abstention thresholds (`calibrate_abstention.py`); the labelled questions
they read (`labelled_questions.py`, `answer_scoring.py`). Every run is recorded in benchmarks/ by `results_log.py`.
"""
