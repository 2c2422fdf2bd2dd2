"""The attributed graph: node ids, circuit.json, building it from effects, ranking, pruning."""
