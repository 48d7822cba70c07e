"""Image-side classifiers on the real Pilatus frame: ROI sums and centroids, zingers, maximum."""

from __future__ import annotations

import numpy as np
import pytest

from saxsdog.errors import CalibrationError

from classifier_helpers import classifier

SHAPE = (1043, 981)


def _numpy_roi(image, mask):
    v = np.where(mask & (image >= 0), image, 0).astype(np.float64)
    rows, cols = np.indices(image.shape)
    total = v.sum()
    return total, (v * rows).sum() / total, (v * cols).sum() / total


def test_rectangle_sum_and_centroid_equal_numpy(real_image):
    roi = classifier({"Kind": "ROI", "Rectangle": [100, 399, 250, 520]}, shape=SHAPE)
    out = roi(real_image)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[100:400, 250:521] = True
    total, row, col = _numpy_roi(real_image, mask)
    assert out["ROI.sum"] == total
    assert out["ROI.centroid_row"] == pytest.approx(row, rel=1e-12)
    assert out["ROI.centroid_col"] == pytest.approx(col, rel=1e-12)
    assert out["ROI.pixels"] == np.count_nonzero(mask & (real_image >= 0))


def test_annulus_in_pixels_and_in_q_equal_numpy(real_image, real_calibration):
    centre = (300.0, 390.0)
    roi = classifier({"Kind": "ROI", "Annulus": {"Center": list(centre), "Radius": [20, 60]}}, shape=SHAPE)
    rows, cols = np.indices(SHAPE)
    d2 = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    total, row, col = _numpy_roi(real_image, (d2 >= 400) & (d2 < 3600))
    out = roi(real_image)
    assert out["ROI.sum"] == total and out["ROI.centroid_row"] == pytest.approx(row, rel=1e-12)
    assert out["ROI.centroid_col"] == pytest.approx(col, rel=1e-12)
    q = real_calibration.geometry.q()
    roi_q = classifier({"Kind": "ROI", "QRange": [0.5, 1.0]}, shape=SHAPE, q_map=real_calibration.geometry.q)
    total, row, col = _numpy_roi(real_image, (q >= 0.5) & (q < 1.0))
    out = roi_q(real_image)
    assert out["ROI.sum"] == total and out["ROI.centroid_col"] == pytest.approx(col, rel=1e-12)


@pytest.mark.parametrize("spec,field", [
    ({"Rectangle": [1000, 1100, 0, 10]}, "Rectangle"),
    ({"Rectangle": [-1, 10, 0, 10]}, "Rectangle"),
    ({"Annulus": {"Center": [5000, 5000], "Radius": [1, 2]}}, "Annulus"),
    ({"Rectangle": [0, 1, 0, 1], "Annulus": {"Radius": [1, 2]}}, None),
])
def test_roi_outside_the_detector_is_a_clear_error(spec, field):
    with pytest.raises(CalibrationError) as info:
        classifier({"Kind": "ROI", **spec}, shape=SHAPE)
    assert info.value.path == ("$.Classifiers[0]" + (f".{field}" if field else ""))


def test_zinger_count_matches_injected_zingers(real_image):
    z = classifier({"Kind": "Zingers"}, shape=SHAPE)
    before = {tuple(p) for p in z.positions(real_image)}
    rng = np.random.default_rng(4)
    image = real_image.copy()
    good = np.argwhere(real_image >= 0)
    # 50 isolated zingers, away from the ones already there and from each other
    chosen: list[tuple[int, int]] = []
    while len(chosen) < 50:
        r, c = good[rng.integers(len(good))]
        if 1 <= r < SHAPE[0] - 1 and 1 <= c < SHAPE[1] - 1 and all(
                max(abs(r - a), abs(c - b)) > 2 for a, b in chosen + list(before)):
            chosen.append((int(r), int(c)))
    for r, c in chosen:
        image[r, c] += 5000
    after = {tuple(p) for p in z.positions(image)}
    assert after - before == set(chosen)
    assert {tuple(p) for p in z.positions_numpy(image)} == after  # the compiled pass and NumPy agree
    assert z(image)["Zingers.count"] == len(before) + 50


def test_image_stats_and_the_saturation_warning(real_image):
    s = classifier({"Kind": "ImageStats"}, shape=SHAPE)
    out = s(real_image, {"header": {"Count_cutoff": "1048500 counts"}})
    assert out["ImageStats.total"] == float(real_image[real_image >= 0].sum())
    assert out["ImageStats.max"] == real_image.max()
    assert real_image[out["ImageStats.max_row"], out["ImageStats.max_col"]] == real_image.max()
    assert out["ImageStats.saturated"] == 0 and out["ImageStats.status"] == "ok"
    hot = real_image.copy()
    hot[10, 10:13] = 1048500
    out = s(hot, {"header": {"Count_cutoff": "1048500 counts"}})
    assert out["ImageStats.saturated"] == 3 and out["ImageStats.status"] == "saturated"
    assert classifier({"Kind": "ImageStats", "Cutoff": 4000}, shape=SHAPE)(real_image)["ImageStats.saturated"] == \
        np.count_nonzero(real_image >= 4000)
