"""Stage 3: evidence the grader computes itself, never taken from the kernel's word.

Owns recreating the notebook's functions from its source, the convolution cases and their
runner, the saved-model verification, the figures, the replayed schedule, which Trainer trained
the saved file, and the written answers; the workers (``workers/``) run confined.
Imports stages 0-2.
"""
