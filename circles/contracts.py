"""What the callbacks, the CLI and the sweep need from the model and from the data, written down as
Protocols.

``CirclesClassifier`` and ``CirclesDataModule`` implement them; another LightningModule or data
module works with the callbacks when it does too. :func:`classifier` and :func:`trainer_data` check
a trainer's module and data module once, with an error that names what is missing, instead of
each consumer probing attributes."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Classifier(Protocol):
    """A classifier of points in the plane that may hold K members (K seeds of one network)."""

    members: int
    num_classes: int

    @property
    def feature_names(self) -> list[str]:
        """The names of the network's inputs (``x1``, ``x2``, ``x1_sq``, ...), in order."""

    # the epoch whose training made the weights it holds (None: untrained)
    weights_epoch: int | None

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's probabilities for points ``(N, 2)``: of class 1 ``(K, N)``, or of each
        class ``(K, N, C)``."""

    def points_per_chunk(self) -> int:
        """Points the network takes at once outside training, whatever its members."""

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The inputs, every hidden layer's output and the logits for points ``(N, 2)`` (the
        first member's)."""

    def layer_weights(self) -> list[torch.Tensor]:
        """The first member's weight matrices ``(out, in)``, input side first."""

    def weight_parameters(self) -> list[torch.Tensor]:
        """The weight matrices as the optimizer holds them, with their gradients after a backward
        pass."""

    def dead_units(self, x: torch.Tensor) -> list[float]:
        """Per hidden layer, the ReLU units that give 0 for all of the points ``(N, 2)``
        (members' mean)."""

    def collapsed(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Without activations, the affine map the network is: weights ``(K, outputs, F)``,
        biases ``(K, outputs)``."""

    def member_table(self) -> dict[str, list[Any]] | None:
        """With several members, a column per fact about them (seed, accuracies), a row per
        member; else None."""


@runtime_checkable
class PointData(Protocol):
    """Labelled points in the plane, split into stages, with what the pictures call their
    classes."""

    num_classes: int
    # a data file's label of each class; None for generated data (labels 0..C-1)
    class_names: list[str] | None

    def points(self, stage: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The points ``(N, 2)`` and labels ``(N,)`` of ``train``, ``val`` or ``test``, once set
        up; else None."""

    def describe(self) -> str:
        """Where the training, validation and test points come from, in one line."""

    def class_legend(self) -> tuple[str, ...]:
        """What the pictures' legend calls each class, in class order."""

    def probability_label(self) -> str:
        """What the probability view shows: ``P(inner circle)``, ``P(class 1)``."""

    def bayes_accuracy(self) -> float | None:
        """The best accuracy any classifier can reach on the test points' distribution, where it
        is known."""


def trainer_data(trainer: Any) -> PointData:
    """The trainer's data module as :class:`PointData` (Lightning attaches ``trainer.datamodule``
    when a run starts; None when the run was given dataloaders instead)."""
    return _checked(trainer.datamodule, PointData, "data module")


def known_data(trainer: Any) -> PointData | None:
    """The trainer's data module if it is :class:`PointData` (circles' own, or one that says as
    much of its points); None for any other data, whose extras are then not used."""
    data = trainer.datamodule
    return data if isinstance(data, PointData) else None


def trainer_callbacks(trainer: Any) -> list[Any]:
    """The trainer's list of callbacks (Lightning builds it when the trainer is made; its type
    stubs do not declare it)."""
    return trainer.callbacks


def classifier(module: Any) -> Classifier:
    """``module`` as a :class:`Classifier`, or a TypeError naming what it lacks."""
    return _checked(module, Classifier, "model")


def _checked(value: Any, protocol: type, what: str) -> Any:
    if not isinstance(value, protocol):
        names = {
            *getattr(protocol, "__annotations__", {}),
            *(n for n in vars(protocol) if not n.startswith("_")),
        }
        members = [name for name in names if not hasattr(value, name)]
        raise TypeError(
            f"The {what} {type(value).__name__} does not provide what circles' callbacks use "
            f"(circles.contracts.{protocol.__name__}): it lacks {', '.join(sorted(members))}."
        )
    return value
