"""Tests for circles.data: the chapter's make_circles split, the test draw, TensorBatches,
read_points_csv."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from circles.data.batches import TensorBatches, derived_seed
from circles.data.files import read_points_csv
from circles.data.module import CirclesDataModule
from circles.errors import ConfigError


def sklearn_split(n_samples=1000, noise=0.03, factor=0.8, val_fraction=0.2, seed=42):
    """The chapter's data, straight from scikit-learn, as float32 tensors (train_x, val_x,
    train_y, val_y)."""
    from sklearn.datasets import make_circles
    from sklearn.model_selection import train_test_split

    X, y = make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=seed)
    parts = train_test_split(X, y, test_size=val_fraction, random_state=seed)
    return [torch.from_numpy(np.asarray(p, dtype=np.float32)) for p in parts]


def fit_module(**kwargs) -> CirclesDataModule:
    dm = CirclesDataModule(**kwargs)
    dm.setup("fit")
    return dm


def test_defaults_are_the_chapters_make_circles_split():
    dm = fit_module()
    train_x, val_x, train_y, val_y = sklearn_split()
    assert dm.train_x.shape == (800, 2) and dm.val_x.shape == (200, 2)
    assert dm.train_y.shape == (800,) and dm.val_y.shape == (200,)
    for got in (dm.train_x, dm.train_y, dm.val_x, dm.val_y):
        assert got.dtype == torch.float32
        assert got.device.type == "cpu"
    assert torch.equal(dm.train_x, train_x)
    assert torch.equal(dm.train_y, train_y)
    assert torch.equal(dm.val_x, val_x)
    assert torch.equal(dm.val_y, val_y)


def test_non_default_arguments_reach_make_circles_and_the_split():
    dm = fit_module(n_samples=300, noise=0.1, factor=0.5, val_fraction=0.3, seed=7)
    train_x, val_x, train_y, val_y = sklearn_split(300, 0.1, 0.5, 0.3, 7)
    assert torch.equal(dm.train_x, train_x) and torch.equal(dm.val_x, val_x)
    assert torch.equal(dm.train_y, train_y) and torch.equal(dm.val_y, val_y)
    assert len(dm.val_x) == math.ceil(0.3 * 300)


def test_same_arguments_give_identical_tensors_and_another_seed_different_ones():
    a, b, c = fit_module(seed=3), fit_module(seed=3), fit_module(seed=4)
    for name in ("train_x", "train_y", "val_x", "val_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.train_x, c.train_x)
    assert not torch.equal(a.val_x, c.val_x)


def test_full_draw_is_half_inner_half_outer():
    dm = fit_module()
    labels = torch.cat([dm.train_y, dm.val_y])
    assert set(labels.unique().tolist()) == {0.0, 1.0}
    assert int(labels.sum()) == 500
    # Label 1 is the inner circle: its points lie closer to the origin (radius ~factor vs ~1).
    radius = torch.cat([dm.train_x, dm.val_x]).norm(dim=1)
    assert radius[labels == 1].max() < radius[labels == 0].min()


def test_setup_fit_does_not_draw_the_test_set():
    dm = fit_module()
    assert dm.test_x is None and dm.test_y is None


def test_test_set_is_a_balanced_independent_reproducible_draw():
    from sklearn.datasets import make_circles

    dm = CirclesDataModule()
    dm.setup("test")
    assert dm.test_x.shape == (10_000, 2) and dm.test_y.shape == (10_000,)
    assert dm.test_x.dtype == torch.float32 and dm.test_y.dtype == torch.float32
    assert int(dm.test_y.sum()) == 5_000

    # A genuine make_circles draw with its own seed, derived from (but not equal to) the data seed.
    seed = derived_seed(42, 1)
    assert seed != 42
    X, y = make_circles(n_samples=10_000, noise=0.03, factor=0.8, random_state=seed)
    assert torch.equal(dm.test_x, torch.from_numpy(X).float())
    assert torch.equal(dm.test_y, torch.from_numpy(y).float())
    X_same_seed, _ = make_circles(n_samples=10_000, noise=0.03, factor=0.8, random_state=42)
    assert not torch.equal(dm.test_x, torch.from_numpy(X_same_seed).float())

    # None of the training or validation points reappears in the test set.
    fit = fit_module()
    for points in (fit.train_x, fit.val_x):
        shared = (dm.test_x[:, None, :] == points[None, :, :]).all(dim=-1)
        assert not shared.any()

    # Reproducible, and independent of the size of the training draw.
    again = CirclesDataModule(n_samples=500)
    again.setup("test")
    assert torch.equal(again.test_x, dm.test_x) and torch.equal(again.test_y, dm.test_y)


def test_test_samples_sets_the_size_and_the_seed_changes_the_draw():
    a = CirclesDataModule(test_samples=1_000)
    a.setup("test")
    assert a.test_x.shape == (1_000, 2)
    assert int(a.test_y.sum()) == 500
    b = CirclesDataModule(test_samples=1_000, seed=43)
    b.setup("test")
    assert not torch.equal(a.test_x, b.test_x)


def test_predict_defaults_to_the_test_set_and_reads_a_csv(tmp_path):
    dm = CirclesDataModule(test_samples=50)
    dm.setup("predict")
    assert dm.predict_x is dm.test_x
    path = tmp_path / "points.csv"
    path.write_text("x1,x2\n0.5,-0.25\n1,2\n")
    dm = CirclesDataModule(test_samples=50, predict_path=str(path))
    dm.setup("predict")
    assert torch.equal(dm.predict_x, torch.tensor([[0.5, -0.25], [1.0, 2.0]]))


def test_derived_seed_is_deterministic_and_stream_specific():
    assert derived_seed(42, 1) == derived_seed(42, 1)
    seeds = {derived_seed(s, k) for s in (0, 1, 42) for k in (1, 2, 1000, 1001)}
    assert len(seeds) == 12
    assert all(0 <= s < 2**32 for s in seeds)
    assert derived_seed(42, 1) not in (42, 1)


# ---------------------------------------------------------------------------------------------- TensorBatches


def indexed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An index column and points that can be traced back to it (point i is (i, -i))."""
    index = torch.arange(n)
    points = torch.stack([index.float(), -index.float()], dim=1)
    return index, points


def collect(batches: TensorBatches) -> list[tuple[torch.Tensor, ...]]:
    out = list(batches)
    assert len(batches) == len(out)
    return out


def test_full_batch_single_process_yields_the_tensors_themselves():
    x, y = torch.randn(7, 2), torch.randint(0, 2, (7,)).float()
    batches = collect(TensorBatches((x, y)))
    assert len(batches) == 1
    bx, by = batches[0]
    assert torch.equal(bx, x) and torch.equal(by, y)
    # No copy: the batch is the tensors' own memory.
    assert bx.data_ptr() == x.data_ptr() and by.data_ptr() == y.data_ptr()


@pytest.mark.parametrize("n, batch_size", [(10, 3), (10, 5), (10, 10), (10, 32), (1, 4)])
def test_batches_of_one_epoch_are_a_permutation_of_all_points(n, batch_size):
    index, points = indexed(n)
    batches = collect(TensorBatches((index, points), batch_size=batch_size, shuffle=True, seed=1))
    assert len(batches) == math.ceil(n / batch_size)
    assert all(len(b[0]) == batch_size for b in batches[:-1])
    assert 1 <= len(batches[-1][0]) <= batch_size
    seen = torch.cat([b[0] for b in batches])
    assert sorted(seen.tolist()) == list(range(n))
    for i, p in batches:  # tensors stay aligned row by row
        assert torch.equal(p, points[i])


def order_of(seed: int, epoch: int, n: int = 50, batch_size: int = 8, **kwargs) -> list[int]:
    index, _ = indexed(n)
    batches = collect(
        TensorBatches(
            (index,), batch_size=batch_size, shuffle=True, seed=seed, epoch=lambda: epoch, **kwargs
        )
    )
    return torch.cat([b[0] for b in batches]).tolist()


def test_order_depends_on_epoch_and_seed_and_is_reproducible():
    assert order_of(0, 0) == order_of(0, 0)
    assert order_of(0, 5) == order_of(0, 5)
    assert order_of(0, 0) != order_of(0, 1)
    assert order_of(0, 0) != order_of(1, 0)
    assert len({tuple(order_of(0, e)) for e in range(5)}) == 5
    assert order_of(0, 0) != list(range(50))


def test_epoch_is_read_at_every_iteration():
    index, _ = indexed(20)
    epoch = {"value": 0}
    batches = TensorBatches(
        (index,), batch_size=4, shuffle=True, seed=3, epoch=lambda: epoch["value"]
    )
    first = torch.cat([b[0] for b in batches]).tolist()
    epoch["value"] = 1
    second = torch.cat([b[0] for b in batches]).tolist()
    epoch["value"] = 0
    third = torch.cat([b[0] for b in batches]).tolist()
    assert first != second and first == third


@pytest.mark.parametrize("n", [10, 11])
@pytest.mark.parametrize("batch_size", [None, 2, 3])
def test_training_shards_of_two_ranks_are_disjoint_equal_and_cover_all_but_the_remainder(
    n, batch_size
):
    index, _ = indexed(n)
    for epoch in range(3):
        shards = []
        for rank in range(2):
            batches = collect(
                TensorBatches(
                    (index,),
                    batch_size=batch_size,
                    shuffle=batch_size is not None,
                    seed=5,
                    epoch=lambda epoch=epoch: epoch,
                    rank=rank,
                    world_size=2,
                    drop_remainder=True,
                )
            )
            shards.append(torch.cat([b[0] for b in batches]).tolist())
        a, b = shards
        assert len(a) == len(b) == n // 2
        assert not set(a) & set(b)
        assert len(set(a) | set(b)) == (n // 2) * 2
        assert set(a) | set(b) <= set(range(n))


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("batch_size", [None, 2])
def test_evaluation_shards_cover_every_point_exactly_once(world_size, batch_size):
    n = 11
    index, _ = indexed(n)
    seen = []
    for rank in range(world_size):
        batches = collect(
            TensorBatches(
                (index,),
                batch_size=batch_size,
                rank=rank,
                world_size=world_size,
                drop_remainder=False,
            )
        )
        seen += torch.cat([b[0] for b in batches]).tolist()
    assert sorted(seen) == list(range(n))


def test_len_counts_the_batches_of_a_shard():
    index, _ = indexed(11)
    for rank in range(2):
        for drop in (True, False):
            batches = TensorBatches(
                (index,), batch_size=2, shuffle=True, rank=rank, world_size=2, drop_remainder=drop
            )
            assert len(batches) == len(list(batches)) == math.ceil(batches.num_samples / 2)


def test_module_dataloaders_without_trainer():
    dm = fit_module(batch_size=100)
    train = dm.train_dataloader()
    batches = collect(train)
    assert len(batches) == 8
    assert sorted(torch.cat([b[0] for b in batches])[:, 0].tolist()) == sorted(
        dm.train_x[:, 0].tolist()
    )
    full = fit_module()
    ((x, y),) = collect(full.train_dataloader())
    assert torch.equal(x, full.train_x) and torch.equal(y, full.train_y)
    ((vx, vy),) = collect(full.val_dataloader())
    assert torch.equal(vx, full.val_x) and torch.equal(vy, full.val_y)


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise": -0.01},
        {"noise": float("nan")},
        {"noise": float("inf")},
        {"factor": 0.0},
        {"factor": 1.0},
        {"factor": 1.5},
        {"factor": -0.5},
        {"val_fraction": 0.0},
        {"val_fraction": 1.0},
        {"val_fraction": 1.2},
        {"n_samples": 0},
        {"n_samples": 10_000_001},
        {"batch_size": 0},
        {"batch_size": -4},
        {"test_samples": 0},
        {"test_samples": -1},
        {"seed": -1},
        {"seed": 2**32},
        {"classes": 1},
        {"dataset": "rings"},
        {"features": ["x3"]},
    ],
)
def test_each_settings_range_is_declared_in_the_signature_where_the_parser_checks_it(kwargs):
    from argparse import ArgumentError

    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CirclesDataModule, "data")
    parser.parse_object({"data": {}})  # the defaults are in range
    with pytest.raises(ArgumentError, match=f"data.{next(iter(kwargs))}"):
        parser.parse_object({"data": kwargs})


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_samples": 3}, "n_samples"),
        ({"n_samples": 9, "val_fraction": 0.1}, "n_samples"),
        ({"dataset": "moons", "classes": 3}, "classes"),
        ({"test_path": "test.csv"}, "test_path"),
        ({"features": []}, "features"),
        ({"features": ["x1", "x1"]}, "features"),
    ],
)
def test_what_no_range_says_is_checked_when_the_data_module_is_made(kwargs, field):
    with pytest.raises(ConfigError) as info:
        CirclesDataModule(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_smallest_allowed_draw_leaves_two_points_on_each_side():
    # Find the smallest n_samples that is accepted and check both sides of its split hold >= 2 points.
    smallest = next(n for n in range(1, 50) if _accepted(n_samples=n))
    dm = fit_module(n_samples=smallest)
    assert len(dm.train_x) >= 2 and len(dm.val_x) >= 2
    assert not _accepted(n_samples=smallest - 1)


def _accepted(**kwargs) -> bool:
    try:
        CirclesDataModule(**kwargs)
    except ConfigError:
        return False
    return True


def test_valid_edge_values_are_accepted():
    assert _accepted(noise=0.0)
    assert _accepted(batch_size=1)
    assert _accepted(test_samples=1)
    assert _accepted(factor=0.01, val_fraction=0.99, n_samples=400)


# ---------------------------------------------------------------------------------------------- read_points_csv


def test_read_points_csv_reads_x1_x2_and_ignores_other_columns(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("label,x2,x1\na,2.5,-1\nb,0,1e-3\n")
    points = read_points_csv(path)
    assert points.dtype == torch.float64  # as read: predictions.csv writes them back
    assert torch.equal(points, torch.tensor([[-1.0, 2.5], [1e-3, 0.0]], dtype=torch.float64))
    assert torch.equal(read_points_csv(str(path)), points)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("x1,y\n1,2\n", r"x2"),  # a required column is missing
        ("a,b\n1,2\n", r"x1"),
        ("", r"x1"),  # not even a header
        ("x1,x2\n1,2\n3,abc\n", r"abc"),  # not a number: names the value ...
        ("x1,x2\n1,2\n3,abc\n", r"\b3\b"),  # ... and the line it is on
        ("x1,x2\n1,2\n3\n", r"None|missing|\b3\b"),  # a short row
        ("x1,x2\nnan,1\n", r"nan"),
        ("x1,x2\n1,inf\n", r"inf"),
        ("x1,x2\n1,-inf\n", r"inf"),
        ("x1,x2\n", r"no data|at least one|empty"),  # header only
    ],
)
def test_read_points_csv_rejects_bad_files_with_a_clear_message(tmp_path, content, pattern):
    path = tmp_path / "points.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=pattern) as info:
        read_points_csv(path)
    assert info.value.field == "predict_path"
    assert str(path) in str(info.value)


def test_read_points_csv_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    with pytest.raises(ConfigError) as info:
        read_points_csv(path)
    assert info.value.field == "predict_path"
    assert "nowhere.csv" in str(info.value)
    with pytest.raises(ConfigError) as info:
        read_points_csv(tmp_path)  # a directory is not a CSV file
    assert info.value.field == "predict_path"


def test_setup_predict_reports_a_bad_csv(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("x1,x2\n")
    dm = CirclesDataModule(test_samples=10, predict_path=str(path))
    with pytest.raises(ConfigError) as info:
        dm.setup("predict")
    assert info.value.field == "predict_path"
