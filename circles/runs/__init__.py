"""The run directory, owned once: numbering, locks and atomic files (``directory``), names
(``names``), what a checkpoint records and the checks on it (``checkpoints``), and the
TensorBoard run logger (``logger``)."""
