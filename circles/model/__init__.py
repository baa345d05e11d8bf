"""The model: the chapter's MLP as a stack of K members (``networks``), the LightningModule that
trains it (``classifier``) and the table of its metrics (``metrics``)."""

from circles.model.classifier import CirclesClassifier

__all__ = ["CirclesClassifier"]
