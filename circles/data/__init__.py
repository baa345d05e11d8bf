"""The data: generated point sets (``generated``) or your own file (``files`` reads it,
``pointfile`` splits it), batched in memory (``batches``) by the :class:`CirclesDataModule`
(``module``)."""

from circles.data.module import CirclesDataModule

__all__ = ["CirclesDataModule"]
