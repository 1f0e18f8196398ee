"""Processing: staged rows -> evaluation (parse + classify, in worker processes) -> decision.

`pipeline` is the two halves (`evaluate` reads untrusted bytes and touches no store; `apply`
decides and records); `isolation` is the worker pool that runs `evaluate` under budgets.
"""
