"""Stage 2: run a notebook.

Owns a kernel's life in a confined process (start, run a cell within its CPU budget, probe,
revive, close), the code loaded into each kernel, and executing a whole notebook.
Imports stages 0-1.
"""
