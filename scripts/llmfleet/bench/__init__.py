"""Benchmarks: workload profiles, a bounded async load generator, results in SQLite, compare and sweep.

``llmfleet bench run`` measures a deployment; ``llmfleet bench compare`` puts runs side by side;
``llmfleet sweep`` deploys candidate configurations through the playbook and keeps the best one.
"""
