"""Stage 5: what a grade leaves behind.

Owns the result files (JSON, Markdown, JUnit), the gradebook (one writer), and the manual
points of written answers (``answers.csv`` -> ``manual.json``).
Imports stages 0-4.
"""
