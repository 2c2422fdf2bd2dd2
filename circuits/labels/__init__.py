"""Feature labels: top-activating contexts on a corpus and a short description of each."""
