"""Why a neural network needs non-linearity: MLPs on make_circles with PyTorch Lightning."""
