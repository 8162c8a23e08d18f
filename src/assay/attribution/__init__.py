"""Evaluating attribution-style scorers against retraining (the linear datamodeling score)."""
