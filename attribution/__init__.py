"""Node and edge effects on a task metric.

Attribution patching, integrated gradients and exact activation patching over the nodes of a
replacement model; edge effects from batched vector-Jacobian products; scores kept per token
position or aggregated per schema span. Pure functions of (replacement model, token batches,
metric, position -> span map): this package knows nothing of task names or files.
"""
