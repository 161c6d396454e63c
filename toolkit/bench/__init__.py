"""`toolkit bench`: FLOPs, memory and latency of exported models vs sequence length, checked against budgets.

Kept import-light: the measuring subprocess (`toolkit.bench.worker`) imports only what its runtime needs.
"""
