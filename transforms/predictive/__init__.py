"""Predictive quality (issue #12): scrap and grade risk of a cell at the gate before formation.

``dataset`` joins ``cell_features`` (transforms/batch/cell_features.py) with each cell's verdict and
turns the feature maps into a matrix; ``model`` trains and evaluates the classifier and the capacity
regressor with a strictly time-based split, beside the baselines and the simulator's ground truth.
Pure functions over Arrow tables and arrays; the Dagster assets and the CLI call them.
"""
