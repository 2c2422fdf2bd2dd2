"""Circuits evaluated by real ablation: faithfulness, completeness, curves, task behaviour."""
