"""Writes examples/rings.csv: three noisy concentric rings named inner, middle and outer, a file
in the format ``data.path`` reads (x1, x2, label; other columns are ignored)."""

from pathlib import Path

import numpy as np

RADII = {"inner": 0.3, "middle": 0.65, "outer": 1.0}


RINGS_CSV = Path(__file__).with_name("rings.csv")


def main(path: Path = RINGS_CSV, per_ring: int = 200, noise: float = 0.05, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = rng.permutation(np.repeat(list(RADII), per_ring))
    angle = rng.uniform(0, 2 * np.pi, len(names))
    radius = np.array([RADII[name] for name in names]) + rng.normal(0, noise, len(names))
    rows = [
        f"{r * np.cos(a):.5f},{r * np.sin(a):.5f},{name}"
        for r, a, name in zip(radius, angle, names, strict=True)
    ]
    path.write_text("\n".join(["x1,x2,label", *rows]) + "\n")


if __name__ == "__main__":
    main()
