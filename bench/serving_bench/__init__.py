"""The parts of ``bench/serving.py``, one job each; its docstring says which is where."""
