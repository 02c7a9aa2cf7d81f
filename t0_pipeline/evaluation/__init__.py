"""Evaluation: held-out queries → each model's condition and disposition accuracy at every k, with
budget forcing and repeated runs; the model-free baseline; the tables and plots that compare them.
"""
