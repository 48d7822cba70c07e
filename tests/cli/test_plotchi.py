"""The plotchi command, run in-process and without a display."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from saxsdog.cli import plotchi
from saxsdog.cli.plotchi import draw, has_display, load_curves, main
from saxsdog.io.chi import write_chi

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def references(data_dir: Path) -> list[str]:
    return [str(data_dir / "reference" / "buf1_00000.saxsdog.chi"),
            str(data_dir / "reference" / "buf1_00000.fit2d.chi")]


@pytest.fixture
def no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(plotchi.sys, "platform", "linux")


def test_writes_png(tmp_path: Path, references: list[str]) -> None:
    out = tmp_path / "plot.png"
    assert main([*references, "-l", "-o", str(out)]) == 0
    content = out.read_bytes()
    assert content.startswith(PNG_MAGIC) and len(content) > 5000


def test_writes_svg(tmp_path: Path, references: list[str]) -> None:
    out = tmp_path / "plot.svg"
    assert main([*references, "-x", "log", "-y", "log", "-o", str(out)]) == 0
    text = out.read_text()
    assert "<svg" in text
    root = ET.fromstring(text)
    assert root.tag.endswith("svg")


def test_figure_content(references: list[str]) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    curves = load_curves(references)
    draw(fig, curves, yscale="log")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["buf1_00000.saxsdog.chi", "buf1_00000.fit2d.chi"]
    assert ax.get_xlabel() == "q [nm$^{-1}$]" and ax.get_ylabel() == "Intensity [counts/pixel]"
    assert ax.get_yscale() == "log"
    # One error band: only the saxsdog file has an error column.
    assert len(ax.collections) == 1
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [1003, 1002]


def test_no_errors_and_no_legend(references: list[str]) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    draw(fig, load_curves(references), errors=False, legend=False, title="T")
    ax = fig.axes[0]
    assert len(ax.collections) == 0 and ax.get_legend() is None and ax.get_title() == "T"


def test_skip_and_clip(references: list[str]) -> None:
    full, trimmed = load_curves(references[:1]), load_curves(references[:1], skip=10, clip=3)
    assert len(trimmed[0].x) == len(full[0].x) - 13
    np.testing.assert_array_equal(trimmed[0].x, full[0].x[10:-3])


def test_compare_mode(tmp_path: Path, references: list[str]) -> None:
    out = tmp_path / "diff.png"
    assert main(["-c", references[1], references[0], "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_compare_shows_difference_of_known_curves(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    q = np.linspace(0.1, 1.0, 10)
    write_chi(tmp_path / "a.chi", [q, np.full(10, 2.0), np.zeros(10)])
    write_chi(tmp_path / "b.chi", [q, np.full(10, 3.0), np.zeros(10)])
    fig = Figure()
    draw(fig, load_curves([str(tmp_path / "a.chi"), str(tmp_path / "b.chi")]), compare=True)
    absolute, relative = fig.axes
    np.testing.assert_allclose(absolute.get_lines()[0].get_ydata(), 1.0)
    np.testing.assert_allclose(relative.get_lines()[0].get_ydata(), 50.0)


def test_writes_default_file_without_display(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             references: list[str], no_display: None,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert not has_display()
    assert main(references[:1]) == 0
    out = tmp_path / "buf1_00000.saxsdog.png"
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert "no display available" in capsys.readouterr().err


def test_non_interactive_backend_means_no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert not has_display()


@pytest.mark.parametrize(("make_args", "message"), [
    (lambda ref, tmp: [str(tmp / "absent.chi"), "-o", str(tmp / "x.png")], "No such file"),
    (lambda ref, tmp: [str(Path(ref[0]).parents[1] / "cal.json"), "-o", str(tmp / "x.png")], "not a .chi file"),
    (lambda ref, tmp: [ref[0], "-o", str(tmp / "x.xyz")], "unknown plot format .xyz"),
    (lambda ref, tmp: ["-c", ref[0], "-o", str(tmp / "x.png")], "--compare needs at least two files"),
    (lambda ref, tmp: [ref[0], "-s", "600", "-k", "600", "-o", str(tmp / "x.png")], "no points left"),
    (lambda ref, tmp: [ref[0], "-y", "cubic"], "invalid choice"),
])
def test_bad_input_exits_2(tmp_path: Path, references: list[str], capsys: pytest.CaptureFixture,
                           make_args, message: str) -> None:
    assert main(make_args(references, tmp_path)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--out", "--compare", "--log", "--no-legend", "--title", "--skip", "--clip",
                   "--xaxisistype", "--yaxisistype"):
        assert option in text


PHI_LABELS = ["Azimuth [deg]", "Intensity (Count/Pixel)", "Error Margin"]  # what a Phi-mode mask writes


def test_phi_mode_curve_is_labelled_by_its_columns(tmp_path: Path, references: list[str]) -> None:
    from matplotlib.figure import Figure

    phi = np.linspace(-180.0, 179.0, 360)
    write_chi(tmp_path / "img_phi.chi", [phi, np.ones(360), np.zeros(360)], labels=PHI_LABELS)
    fig = Figure()
    draw(fig, load_curves([str(tmp_path / "img_phi.chi")]))
    assert fig.axes[0].get_xlabel() == "Azimuth [deg]"
    # Radial files keep the q label, whichever writer made them (saxsdog, 2014 original, FIT2D).
    for path in references:
        fig = Figure()
        draw(fig, load_curves([path]))
        assert fig.axes[0].get_xlabel() == "q [nm$^{-1}$]"
    slice_labels = ["vertical scattering vector $q_{v}$ [$nm^{-1}$]", "Intensity (Count/Pixel)", "Error Margin"]
    write_chi(tmp_path / "img_slice.chi", [phi, np.ones(360), np.zeros(360)], labels=slice_labels)
    fig = Figure()
    draw(fig, load_curves([str(tmp_path / "img_slice.chi")]))
    assert fig.axes[0].get_xlabel() == slice_labels[0]


@pytest.mark.slow
def test_compare_says_which_axis_is_which(tmp_path: Path, references: list[str]) -> None:
    import subprocess
    import sys

    out = tmp_path / "diff.png"
    r = subprocess.run([sys.executable, "-m", "saxsdog.cli.plotchi", "-c", *references, "-o", str(out)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "left axis (solid lines) the difference of each file to buf1_00000.saxsdog.chi" in r.stderr
    assert "right axis (dotted lines) the same in %" in r.stderr
    from matplotlib.figure import Figure

    fig = Figure()
    draw(fig, load_curves(references), compare=True)
    left, right = fig.axes
    assert left.get_ylabel().startswith("left, solid: difference to buf1_00000.saxsdog.chi")
    assert right.get_ylabel() == "right, dotted: relative difference [%]"
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert legend == ["buf1_00000.fit2d.chi - buf1_00000.saxsdog.chi (left axis)",
                      "buf1_00000.fit2d.chi relative (right axis)"]


def test_mixed_x_axes_are_warned_about(tmp_path: Path, references: list[str],
                                       capsys: pytest.CaptureFixture) -> None:
    phi = np.linspace(-180.0, 179.0, 360)
    write_chi(tmp_path / "img_phi.chi", [phi, np.ones(360), np.zeros(360)], labels=PHI_LABELS)
    assert main([references[0], str(tmp_path / "img_phi.chi"), "-o", str(tmp_path / "x.png")]) == 0
    assert "the files' x axes differ" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "Examples:" in text and "plotchi -c fit2d.chi saxsdog.chi" in text
