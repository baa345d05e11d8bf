"""The one reader of point files: encodings, header, numbers, labels and sizes, each refused in
one line that names the file, the line and what is wrong, quickly, whatever the file holds."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circles.data.files import MAX_FIELD, encode_labels, read_labelled_csv, read_points_csv
from circles.errors import ConfigError

ROWS = "x1,x2,label\n0.5,-1,a\n1e-3,2.5,b\n"


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_utf8_and_unicode_with_a_byte_order_mark_read_alike(tmp_path, encoding, bom):
    path = tmp_path / "p.csv"
    path.write_bytes(bom + ROWS.replace("\n", "\r\n").encode(encoding))
    x, labels = read_labelled_csv(path)
    assert labels == ["a", "b"] and torch.equal(x, torch.tensor([[0.5, -1.0], [1e-3, 2.5]]))


@pytest.mark.parametrize(
    "content, pattern",
    [
        (
            ROWS.replace("a\n", "caf\xe9\n").encode("latin-1"),
            r"Line 2 has the byte 0xe9, which is not UTF-8",
        ),
        (ROWS.encode("utf-16-le"), r"NUL bytes: UTF-16 without a byte-order mark\?"),
        (codecs.BOM_UTF16_LE, r"The file is empty"),
        (b"", r"The file is empty"),
    ],
)
def test_other_encodings_are_refused_naming_the_line_and_byte(tmp_path, content, pattern):
    path = tmp_path / "p.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=pattern) as refused:
        read_labelled_csv(path)
    assert refused.value.field == "path" and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "header, twice", [("x1,x2,x1,label", "x1 2 times"), ("x1,x2,label,label", "label 2 times")]
)
def test_a_column_named_twice_is_refused_naming_it(tmp_path, header, twice):
    (tmp_path / "p.csv").write_text(f"{header}\n1,2,3,4\n")
    with pytest.raises(ConfigError, match=f"header has {twice}"):
        read_labelled_csv(tmp_path / "p.csv")
    (tmp_path / "q.csv").write_text("x1,x2,x1\n1,2,3\n")
    with pytest.raises(ConfigError, match="header has x1 2 times"):
        read_points_csv(tmp_path / "q.csv")


@pytest.mark.parametrize("value", ["1_000", "\u0661\u0662", "0x10", "1,5", "", "1e", "--1"])
def test_only_plain_decimal_numbers_are_numbers(tmp_path, value):
    (tmp_path / "p.csv").write_text(f'x1,x2\n"{value}",1\n')
    with pytest.raises(ConfigError, match=r"Line 2 has x1="):
        read_points_csv(tmp_path / "p.csv")


def test_line_numbers_count_blank_and_quoted_lines(tmp_path):
    (tmp_path / "p.csv").write_text('x1,x2,label\n\n1,2,"a\nb"\n\n3,x,a\n')
    with pytest.raises(ConfigError, match=r"Line 6 has x2='x'"):
        read_labelled_csv(tmp_path / "p.csv")


def test_fields_too_long_and_files_too_large_are_refused_at_once(tmp_path, monkeypatch):
    (tmp_path / "long.csv").write_text("x1,x2,label\n1,2," + "a" * 2_000_000 + "\n")
    with pytest.raises(
        ConfigError,
        match=rf"fields of at most {MAX_FIELD} characters.*Line 2 has one of over 131,072",
    ):
        read_labelled_csv(tmp_path / "long.csv")
    (tmp_path / "long.csv").write_text("x1,x2,label\n1,2," + "a" * 5000 + "\n")
    with pytest.raises(
        ConfigError, match=rf"fields of at most {MAX_FIELD} characters.*Line 2 has one of 5,000"
    ):
        read_labelled_csv(tmp_path / "long.csv")
    with open(tmp_path / "huge.csv", "wb") as f:  # sparse: 2 GiB on paper, nothing on the disk
        f.truncate(2 << 30)

    def never_read(path: Path) -> bytes:
        raise AssertionError(f"{path} was read: its size alone refuses it")

    monkeypatch.setattr(Path, "read_bytes", never_read)
    with pytest.raises(ConfigError, match=r"at most 1024 MiB.*It has 2,048 MiB"):
        read_points_csv(tmp_path / "huge.csv")


def test_a_label_column_written_as_integers_reads_the_same_in_the_training_and_the_test_file():
    y, classes, names = encode_labels(["00", "01", "1"], "path", "p.csv")
    assert (y.tolist(), classes, names) == ([0.0, 1.0, 1.0], 2, None)
    assert encode_labels(["01", "0"], "test_path", "t.csv", known=(2, None))[0].tolist() == [
        1.0,
        0.0,
    ]
    with pytest.raises(
        ConfigError, match=r"training data's classes \['0', '1'\].*other labels: \['2'\]"
    ):
        encode_labels(["2"], "test_path", "t.csv", known=(2, None))


@settings(max_examples=30)
@given(
    rows=st.integers(1, 30),
    bad_row=st.data(),
    blank_after=st.sets(st.integers(0, 30), max_size=5),
)
def test_a_point_whose_features_overflow_is_named_by_its_line(
    tmp_path_factory, rows, bad_row, blank_after
):
    """Not by its place after the split (``point 3`` once meant a shuffled training point)."""
    from circles.data.files import check_file_features, read_points_csv

    bad = bad_row.draw(st.integers(0, rows - 1))
    lines = ["x1,x2"]
    line_of_bad = None
    for i in range(rows):
        lines.append("1e30,1" if i == bad else f"{i},1")
        if i == bad:
            line_of_bad = len(lines)
        if i in blank_after:
            lines.append("")
    path = tmp_path_factory.mktemp("csv") / "points.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"the first on line {line_of_bad}: \(1e\+30, 1\)"):
        check_file_features(["x1_sq", "x2"], read_points_csv(path), "predict_path", path, False)


@settings(max_examples=30)
@given(
    classes=st.integers(2, 6),
    written=st.data(),
    spelling=st.sampled_from(["{}.0", "{}.00", "{}e0", "+{}.0"]),
)
def test_an_integer_class_written_as_a_decimal_is_named_as_a_number(
    tmp_path_factory, classes, written, spelling
):
    """``1.0`` beside integer labels was once called a class name."""
    k = written.draw(st.integers(0, classes - 1))
    label = spelling.format(k)
    rows = [f"{i},{i % 3},{i % classes}" for i in range(2 * classes)] + [f"9,9,{label}"]
    path = tmp_path_factory.mktemp("csv") / "labels.csv"
    path.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError) as refused:
        read_labelled = read_labelled_csv(path)
        encode_labels(read_labelled[1], "path", path)
    text = str(refused.value)
    assert f"It has {label!r}, a number but not an integer" in text, text
    assert f"Write {label!r} as {k}" in text and "names" not in text.split("got")[1], text
