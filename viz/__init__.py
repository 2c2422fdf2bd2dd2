"""Rendering of circuits: graphviz diagrams, faithfulness-versus-size plots, HTML reports.

Takes plain data (networkx graphs with node attributes, lists of numbers) and imports none of
the other packages, so it can be used on its own.
"""
