"""The grader: run a submission's notebooks confined, gather evidence, decide, report.

Stages, lowest first. A module imports only from its own stage or a lower one:

0. ``paths``, ``results``, ``options``, ``markers``: the kit's paths, the result records, the grading
   options and policies, the placeholders templates and checks share.
1. ``confine``: run a process confined (bubblewrap, process limits, CPU-time meter).
2. ``run``: a notebook kernel's life in a confined process; executing a notebook.
3. ``evidence``: what the grader computes itself (convolution cases, saved models, figures,
   schedule, training) in confined workers.
4. ``checks``, ``assignments``, ``grade``: verdicts and points, one submission graded.
5. ``report``: result files, the gradebook, manual points.
6. ``classroom``: a class (batch, merge, similarity), a student's pull request.
7. ``release``: solutions -> assignments, the student repository.
8. ``cli``, ``pytest_plugin``: the commands.
"""
