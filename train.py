"""Train, validate, test or predict with the circles models, or compare runs side by side:
``python train.py fit --config configs/relu.yaml``."""

from circles.commands import main

if __name__ == "__main__":
    main()
