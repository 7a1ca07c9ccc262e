"""The dashboard's pure figures: histogram quantiles, labels and SVG charts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from timer_controller.api.ui.charts import Series, bar_chart, log_line_chart
from timer_controller.api.ui.figures import bucket_labels, quantile_ms

BOUNDS = (1.0, 10.0, 100.0)
SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ([0, 0, 0, 0], 0.5, None),
        ([10, 0, 0, 0], 0.5, 0.5),  # inside [0, 1 ms)
        ([0, 10, 0, 0], 0.5, 5.5),  # halfway through [1, 10)
        ([0, 0, 0, 10], 0.99, 100.0),  # the open top bucket: its lower bound
        ([50, 0, 0, 50], 0.5, 1.0),  # exactly the first half
        ([98, 0, 2, 0], 0.99, 55.0),  # p99 in [10, 100): the second of two
    ],
)
def test_quantile_interpolates_inside_its_bucket(
    counts: list[int], q: float, expected: float | None
) -> None:
    result = quantile_ms(counts, BOUNDS, q)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_bucket_labels_cover_every_bucket() -> None:
    assert bucket_labels((1, 1000, 5000)) == ["< 1 ms", "1 ms–1 s", "1 s–5 s", "≥ 5 s"]


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def test_a_bar_chart_draws_one_bar_per_nonzero_value_and_says_what_it_shows() -> None:
    svg = _parse(bar_chart("c", "Fired <per> minute", [0, 3, 0, 7]))
    bars = svg.findall(f"{SVG}rect")
    assert len(bars) == 2
    heights = [float(b.attrib["height"]) for b in bars]
    assert heights[0] < heights[1]
    assert svg.attrib["role"] == "img"
    title = svg.find(f"{SVG}title")
    assert title is not None
    assert title.text == "Fired <per> minute"  # escaped in the markup, intact when parsed
    desc = svg.find(f"{SVG}desc")
    assert desc is not None
    assert desc.text is not None
    assert "10 in all" in desc.text


def test_a_log_line_chart_skips_minutes_without_data() -> None:
    svg = _parse(
        log_line_chart(
            "l", "Lateness", [Series("p50", [None, 2.0, None, 40.0], "line-p50")], unit="ms"
        )
    )
    (line,) = svg.findall(f"{SVG}polyline")
    points = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
    assert len(points) == 2
    assert points[1][1] < points[0][1]  # later is higher on the page: larger value
