"""Stage 6: a class and its pull requests.

Owns grading a class (discovery, shards, N at once, resume, overview, merge of shards), the
similarity report across a class, and grading a student's pull request.
Imports stages 0-5.
"""
