"""The embedded default: a synthetic English-like language, its word-level tokenizer, and a
small TL-native transformer trained on it (weights shipped in ``data/``)."""
