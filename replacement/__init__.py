"""Sparse dictionaries and the replacement model.

Per-sublayer SAEs (attention output, MLP output, residual stream, embedding) and transcoders
(MLP input -> MLP output) as SAELens modules; training them on a model's activations; saving
and loading dictionary sets in SAELens's disk format; and splicing them into a TransformerLens
``TransformerBridge`` so that every site computes ``decode(features) + error`` exactly, with
features and error nodes exposed for attribution and intervention.
"""
