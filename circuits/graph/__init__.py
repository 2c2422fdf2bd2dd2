"""The attributed graph and the circuit, as networkx ``DiGraph`` objects with a fixed schema.

- :mod:`circuits.graph.ids`: node ids (``parse_node_id``, ``METRIC``, ``ERROR_INDEX``), node and graph
  attributes, and building, counting, copying and ordering graphs;
- :mod:`circuits.graph.io`: validation and circuit.json (``save_circuit``, ``load_circuit``,
  ``check_compatible``);
- :mod:`circuits.graph.build`: the attributed graph from node and edge effects;
- :mod:`circuits.graph.ranking` and :mod:`circuits.graph.prune`: ranking nodes and pruning to a circuit.
"""
