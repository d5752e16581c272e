"""Stage 7: what students receive.

Owns turning ``solutions/`` into ``assignments/`` (templates) and writing the student
repository (no solutions, no hidden seed).
Imports stage 0 only.
"""
