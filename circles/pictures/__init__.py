"""Pictures of a model, with no Lightning in them: a model over a grid (``grids``), what a
picture holds and its colours (``panels``), TensorBoard's frames (``frames``), the network and
its units (``network``), the words beside them (``notes``) and the matplotlib PNGs (``figures``).
matplotlib is imported inside the functions that draw with it."""
