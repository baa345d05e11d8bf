"""Train, validate, test or predict with the circles models: ``python train.py fit --config configs/relu.yaml``."""

from circles.cli import cli_main

if __name__ == "__main__":
    cli_main()
