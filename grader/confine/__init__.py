"""Stage 1: run a process confined.

Owns the sandbox (bubblewrap with an allow-list filesystem), the process limits (memory,
processes, CPU time, disk; one mechanism class each), the launcher that joins them, the process
plumbing shared by kernels and workers, and the verification worker runner.
Imports only stage 0 (``grader.paths``, ``grader.results``, ``grader.options``).
"""
