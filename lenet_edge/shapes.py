"""Digit shapes: how wide and how tall Hoda's handwritten digits are, as weights for the segmentation.

`segment.plausible` asks of every candidate piece of a number: could a digit
of class d have this box? The classifier cannot tell, since it sees every piece
scaled into the same 20 px box and is about as sure of a piece or of two
touching digits as of one digit. The answer here is graded, not yes or no: a
piece whose width / height, and whose height relative to the line's H, are
among the central 95% of Hoda's training digits of that class keeps its class
probability; a rarer one is weighted by how rare it is (the share of Hoda's
digits of the class at least as extreme, over `TAIL`), down to `IMPLAUSIBLE`
at the 0.5th / 99.5th percentile and beyond. So two touching digits read as
one (a ۱ glued to a ۵, a ۰ to a ۶: a box wider than nearly every single digit
of the class read) lose to the cut that separates them, and a short piece cut
off a stroke (the hook of a ۴ read as a ۱) loses to the whole digit, while a
digit of ordinary shape keeps its full weight.

The tables are percentiles over Hoda's 60,000 training digits at their scanned
size; heights are relative to the median height of the digits other than ۰.
"""

from __future__ import annotations

import numpy as np

IMPLAUSIBLE = 0.1  # weight of a class a piece's shape rules out
TAIL = 0.025  # shapes at least this common (per side: the central 95%) are not down-weighted at all
# share of a class's digits at least as extreme as each column of the tables below
LEVELS = np.array([0.05, 0.025, 0.01, 0.005])
# width / height of each digit at its 95th, 97.5th, 99th and 99.5th percentiles
ASPECT_HIGH = np.array(
    [
        (1.40, 1.46, 1.60, 1.67),
        (0.52, 0.57, 0.64, 0.70),
        (0.71, 0.75, 0.81, 0.87),
        (0.93, 1.00, 1.07, 1.14),
        (0.91, 0.97, 1.04, 1.12),
        (1.25, 1.32, 1.42, 1.50),
        (1.00, 1.09, 1.23, 1.32),
        (1.17, 1.24, 1.33, 1.41),
        (1.15, 1.22, 1.29, 1.36),
        (0.90, 0.96, 1.04, 1.08),
    ]
)
# width / height of each digit at its 0.5th percentile (narrower is a sliver, not a digit)
ASPECT_LOW = np.array([0.67, 0.13, 0.36, 0.49, 0.40, 0.52, 0.41, 0.55, 0.56, 0.37])
# height of each digit but ۰ over the line's height at its 5th, 2.5th, 1st and 0.5th percentiles
HEIGHT_LOW = np.array(
    [
        (0.73, 0.67, 0.63, 0.57),
        (0.80, 0.73, 0.70, 0.67),
        (0.80, 0.77, 0.70, 0.67),
        (0.83, 0.80, 0.73, 0.70),
        (0.67, 0.63, 0.57, 0.57),
        (0.80, 0.73, 0.67, 0.63),
        (0.67, 0.63, 0.60, 0.53),
        (0.70, 0.63, 0.60, 0.57),
        (0.83, 0.77, 0.73, 0.70),
    ]
)
ZERO_MIN_HEIGHT = 0.2  # its 0.5th percentile: a lower blob is a fleck
LOW_SLACK = 0.15  # margin below ASPECT_LOW: a slanted stroke's box is a little wider or narrower


def tail_weight(values: np.ndarray, high: np.ndarray, tail: float = TAIL) -> np.ndarray:
    """(N, K) weights of N `values` against K rows of upper percentiles `high` (K, 4) at `LEVELS`.

    1 up to the 95th percentile; then the share of digits at least as large (interpolated
    linearly between the tabled percentiles) over `tail`, reaching `IMPLAUSIBLE` at the 99.5th;
    `IMPLAUSIBLE` beyond it. With `tail` 0.005 (`LEVELS[-1]`) the weight is 1 or `IMPLAUSIBLE`: a
    plain range check.
    """
    v = np.asarray(values, np.float64).reshape(-1, 1, 1)
    # the share falls linearly from LEVELS[k] to LEVELS[k + 1] between high[:, k] and high[:, k + 1]
    steps = np.diff(high, axis=1)
    done = np.clip((v - high[:, :-1]) / np.where(steps > 0, steps, 1e-9), 0, 1)  # (N, K, 3)
    share = LEVELS[0] + done @ np.diff(LEVELS)
    share[v[:, :, 0] < high[:, 0]] = tail  # below the 95th percentile: common
    share[v[:, :, 0] >= high[:, -1]] = 0.0  # beyond the table: ruled out
    return np.clip(share / tail, IMPLAUSIBLE, 1.0)


def shape_weights(
    widths: np.ndarray, heights: np.ndarray, line_height: float, aspect_slack: float = 0.0, graded: bool = True
) -> np.ndarray:
    """(N, 10) weights of the classes for N pieces `widths` x `heights` px on a line of ink height `line_height`.

    Args:
        widths: the pieces' box widths, px.
        heights: their box heights, px.
        line_height: H, the height of the line's ordinary digits.
        aspect_slack: the upper percentiles of width / height are stretched by 1 + this (0: as
            measured) before a piece is weighed against them.
        graded: weigh shapes by their rarity; False: only rule out shapes beyond the 0.5th / 99.5th
            percentiles (a quick test of whether a piece can be one digit at all).
    """
    tail = TAIL if graded else LEVELS[-1]
    heights = np.asarray(heights, np.float64)
    aspect = np.asarray(widths, np.float64) / heights
    weights = tail_weight(aspect / (1 + aspect_slack), ASPECT_HIGH, tail)
    weights[aspect[:, None] < ASPECT_LOW * (1 - LOW_SLACK)] = IMPLAUSIBLE
    relative = heights / line_height
    weights[:, 1:] = np.minimum(
        weights[:, 1:], tail_weight(-relative, -HEIGHT_LOW, tail)
    )  # a piece of a stroke is short
    weights[relative < 0.5, 1:] = IMPLAUSIBLE  # every digit but ۰ is at least half the line's height
    # a ۰ is rarely more than 0.6 H: as tall as the line, it is more likely another digit
    weights[:, 0] = np.where(relative > 0.85, np.minimum(weights[:, 0], 0.5), weights[:, 0])
    weights[relative < ZERO_MIN_HEIGHT, 0] = IMPLAUSIBLE  # a fleck: even Hoda's smallest ۰ is taller
    return weights
