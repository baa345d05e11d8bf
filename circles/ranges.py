"""The ranges of the settings, declared as jsonargparse types: the parser checks a value against
its range wherever it comes from (the command line, a config file, a checkpoint's
hyperparameters), and ``--help`` shows the range as the option's type."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jsonargparse.typing import OpenUnitInterval, restricted_number_type

MAX_POINTS = 10_000_000  # drawn or read: far more than a lesson needs
MAX_CLASSES = 1000
MAX_MEMBERS = 65_536
MAX_RESOLUTION = 1000  # grid points per axis: far finer than a picture's pixels
# noise, penalties: beyond it points leave float32's range or lose every digit of the shape
MAX_SIZE = 1e30

if TYPE_CHECKING:
    Count = int
    Members = int
    Classes = int
    Samples = int
    Seed = int
    Resolution = int
    Fraction = float
    Size = float
else:
    # the name is what --help shows as the type and an error says the value must be
    Count = restricted_number_type("an integer >= 1", int, (">=", 1))
    Members = restricted_number_type(
        f"an integer from 1 to {MAX_MEMBERS}", int, [(">=", 1), ("<=", MAX_MEMBERS)]
    )
    Classes = restricted_number_type(
        f"an integer from 2 to {MAX_CLASSES}", int, [(">=", 2), ("<=", MAX_CLASSES)]
    )
    Samples = restricted_number_type(
        f"an integer from 1 to {MAX_POINTS}", int, [(">=", 1), ("<=", MAX_POINTS)]
    )
    Seed = restricted_number_type(
        "an integer from 0 to 4294967295", int, [(">=", 0), ("<=", 2**32 - 1)]
    )
    Resolution = restricted_number_type(
        f"an integer from 2 to {MAX_RESOLUTION}", int, [(">=", 2), ("<=", MAX_RESOLUTION)]
    )
    Fraction = OpenUnitInterval  # a number strictly between 0 and 1
    Size = restricted_number_type(
        f"a number from 0 to {MAX_SIZE:g}", float, [(">=", 0), ("<=", MAX_SIZE)]
    )
