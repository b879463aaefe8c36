"""Who runs when, and where: the fair policy, jobs, the queue, the executor pool, the worker
thread and the local and Ray executors. Builds on :mod:`generation.core` and
:mod:`generation.model`."""
