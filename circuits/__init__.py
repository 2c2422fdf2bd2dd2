"""Circuit discovery over sparse feature graphs: the researcher's layer.

- :mod:`circuits.toy`: the embedded model, its language, tokenizer and shipped dictionaries;
- :mod:`circuits.data`: tasks, schemas, task files, splits and attribution inputs;
- :mod:`circuits.graph`: node ids, circuit.json, the attributed graph, ranking and pruning;
- :mod:`circuits.evaluation`: faithfulness and completeness by real ablation, and curves;
- :mod:`circuits.labels`: feature labels from top-activating contexts;
- :mod:`circuits.app`: run configurations, loading, the pipeline and the ``circuits`` CLI.

Importing the package loads none of them; import what you use.
"""

__version__ = "0.1.0"
