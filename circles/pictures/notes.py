"""What a picture says in words beside its colours: the members' vote, and the affine map a
network without activations is."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circles.contracts import Classifier, PointData

MEMBER_LINES = 16  # the members whose own boundary a linear model's pictures draw


def collapse_lines(model: Classifier, inputs: list[str], names: tuple[str, ...]) -> list[str]:
    """Without an activation, the affine map the network is, as text: its logit (two classes) or
    each class's (more), for the first member; empty for a network with activations."""
    collapsed = model.collapsed()
    if collapsed is None:
        return []
    weights, biases = collapsed[0][0], collapsed[1][0]  # the first member's
    if len(weights) == 1:
        return [
            f"logit = {affine_text(weights[0], biases[0], inputs)}; the boundary is where it is 0"
        ]
    return [
        f"logit of {name} = {affine_text(w, b, inputs)}"
        for name, w, b in zip(names, weights, biases, strict=True)
    ]


def draws_lines(model: Classifier) -> bool:
    """A linear network of two classes: its boundary is a line (per member), drawn as one."""
    return model.num_classes == 2 and model.collapsed() is not None


def picture_notes(model: Classifier, data: PointData) -> list[str]:
    """What a picture's colours and lines mean beyond the legend: the members' vote, a linear
    model's lines."""
    notes = []
    if model.members > 1:
        notes.append(
            f"colour: share of the {model.members} members voting {data.class_legend()[1]}"
            if model.num_classes == 2
            else f"colour: the class most of the {model.members} members vote for, paler where "
            "they disagree"
        )
    if draws_lines(model):
        shape = (
            "a straight line"
            if model.feature_names == ["x1", "x2"]
            else f"a straight line in {', '.join(model.feature_names)} (a curve of the plane)"
        )
        if model.members == 1:
            collapsed = model.collapsed()
            assert collapsed is not None  # draws_lines: no activation
            logit = affine_text(collapsed[0][0][0], collapsed[1][0][0], model.feature_names, 3)
            boundary = "a straight boundary" if shape == "a straight line" else f"boundary {shape}"
            notes.append(f"no activation, one affine map: {boundary}, {logit} = 0")
        else:
            first = f" (the first {MEMBER_LINES})" if model.members > MEMBER_LINES else ""
            notes.append(
                f"no activation: one affine map each, so each member's boundary is {shape} "
                f"(black{first})"
            )
    return notes


def affine_text(
    weights: torch.Tensor, bias: torch.Tensor, inputs: Sequence[str], digits: int = 4
) -> str:
    """``0.0123*x1 - 0.0456*x2 + 0.0789``: one output of an affine map, its weights ``(inputs,)``
    and bias, each to ``digits`` significant digits."""
    terms = [
        f"{'-' if w < 0 else '+'} {abs(w):.{digits}g}*{name}"
        for w, name in zip(weights.tolist(), inputs, strict=True)
    ]
    terms.append(f"{'-' if bias < 0 else '+'} {abs(float(bias)):.{digits}g}")
    text = " ".join(terms)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]
