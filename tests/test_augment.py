"""Augmentation: the sampler's geometry, the elastic field, seeding, and what each distortion does."""

import numpy as np
import pytest

from lenet_edge.augment import augment, bilinear_sample, elastic_field, gaussian_matrix
from lenet_edge.compat import tf
from lenet_edge.config import TrainConfig

STILL = dict(rotation=0.0, scale=0.0, shift=0.0, shear=0.0, stroke=0.0)  # no distortion at all


@pytest.fixture(scope="module")
def batch():
    """Eight (28, 28, 1) digits-like images: a ring of varying radius and thickness, in [0, 1]."""
    yy, xx = np.mgrid[0:28, 0:28]
    images = []
    for k in range(8):
        r = np.hypot(yy - 13.5, xx - 13.5)
        images.append(np.clip(2.5 + k % 3 - np.abs(r - 5 - k % 4), 0, 1))
    return tf.constant(np.stack(images)[..., None].astype(np.float32))


def seed(step):
    return tf.constant([3, step], tf.int64)


def test_no_distortion_returns_the_images_on_both_paths(batch):
    for elastic in (0.0, 1e-12):  # the projective transform, and the sampler with a (vanishing) elastic field
        out = augment(batch, seed(0), TrainConfig(**STILL, elastic_alpha=elastic)).numpy()
        np.testing.assert_allclose(out, batch.numpy(), atol=1e-6)


def test_own_sampler_agrees_with_the_projective_transform(batch):
    """Same affine draw, no elastic displacement: the two resampling paths give the same pixels."""
    projective = augment(batch, seed(5), TrainConfig()).numpy()
    sampled = augment(batch, seed(5), TrainConfig(elastic_alpha=1e-12)).numpy()
    np.testing.assert_allclose(sampled, projective, atol=1e-5)


def test_bilinear_sample_interpolates_and_reads_zero_outside():
    image = tf.constant(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1))
    x = tf.constant([[[0.5, 3.0, -1.0, 4.5]]])  # (1, 1, 4): between columns, the last column, off both sides
    y = tf.constant([[[0.0, 2.0, 1.0, 1.0]]])
    out = bilinear_sample(image, x, y).numpy().ravel()
    np.testing.assert_allclose(out, [0.5, 11.0, 0.0, 0.0])
    half_off = bilinear_sample(image, tf.constant([[[-0.5]]]), tf.constant([[[0.0]]])).numpy().ravel()
    np.testing.assert_allclose(half_off, [0.0])  # halfway to the zero border: half of pixel (0, 0), which is 0


def test_same_seed_same_batch_and_new_seed_new_batch(batch):
    config = TrainConfig(elastic_alpha=34.0)
    first, again = augment(batch, seed(1), config).numpy(), augment(batch, seed(1), config).numpy()
    assert np.array_equal(first, again)
    assert not np.allclose(first, augment(batch, seed(2), config).numpy())


def test_elastic_field_is_smooth_zero_mean_and_scales_with_alpha():
    small = elastic_field(64, seed(0), 10.0, 4.0).numpy()  # (64, 28, 28, 2)
    large = elastic_field(64, seed(0), 20.0, 4.0).numpy()
    assert small.shape == (64, 28, 28, 2)
    np.testing.assert_allclose(large, 2 * small, rtol=1e-5, atol=1e-6)  # linear in alpha, same noise
    rms = np.sqrt(np.mean(small**2))
    assert 0.2 < rms < 1.0 and abs(small.mean()) < 0.1 * rms  # sub-pixel displacements around no shift
    step = np.sqrt(np.mean(np.diff(small, axis=1) ** 2))
    assert step < 0.25 * rms  # neighbours move together: a smooth field, not noise
    rough = np.sqrt(np.mean(np.diff(elastic_field(64, seed(0), 10.0, 1.0).numpy(), axis=1) ** 2))
    assert rough > 2 * step  # a smaller sigma is a rougher field


def test_gaussian_matrix_rows_sum_to_one_away_from_the_border():
    g = np.array(gaussian_matrix(2.0))
    assert g.shape == (28, 28) and np.allclose(g, g.T)
    np.testing.assert_allclose(g[6:22].sum(axis=1), 1.0, rtol=1e-6)
    assert g[0].sum() < 0.9  # zero padding: the border row sees no field beyond the edge


def test_elastic_bends_strokes_but_keeps_the_ink(batch):
    plain = batch.numpy()
    bent = augment(batch, seed(4), TrainConfig(**STILL, elastic_alpha=34.0)).numpy()
    assert np.all((bent >= 0) & (bent <= 1))
    changed = np.abs(bent - plain).max(axis=(1, 2, 3))
    assert np.all(changed > 0.1)  # every image is distorted
    ratio = bent.sum(axis=(1, 2, 3)) / plain.sum(axis=(1, 2, 3))
    assert np.all((ratio > 0.8) & (ratio < 1.2))  # but its ink stays about what it was


def test_stroke_change_thickens_or_thins_each_image(batch):
    out = augment(batch, seed(6), TrainConfig(**{**STILL, "stroke": 1.0})).numpy()
    ink, before = out.sum(axis=(1, 2, 3)), batch.numpy().sum(axis=(1, 2, 3))
    assert np.all((ink > 1.1 * before) | (ink < 0.9 * before))  # every image one way or the other
    assert np.any(ink > before) and np.any(ink < before)  # and both ways occur in eight draws
