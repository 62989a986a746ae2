"""Distillation: the soft-target loss, and a Distiller that trains the student alone."""

import numpy as np
import pytest

from lenet_edge.compat import keras, tf
from lenet_edge.distill import Distiller, soft_target_loss
from lenet_edge.model import build_lenet5, build_teacher


def test_soft_target_loss_is_t_squared_kl():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(5, 10)), rng.normal(size=(5, 10))
    t = 3.0

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(teacher / t), softmax(student / t)
    expected = t**2 * np.sum(p * np.log(p / q), axis=1)
    got = soft_target_loss(tf.constant(teacher), tf.constant(student), t).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.allclose(soft_target_loss(tf.constant(teacher), tf.constant(teacher), t).numpy(), 0, atol=1e-9)


def test_soft_target_loss_ignores_a_shift_of_the_logits():
    logits = tf.constant(np.random.default_rng(1).normal(size=(4, 10)))
    np.testing.assert_allclose(soft_target_loss(logits, logits + 7.0, 2.0).numpy(), 0, atol=1e-9)


def xy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1)).astype(np.float32), np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]


def compiled(model, alpha=0.5, teacher=None):
    teacher = teacher or build_teacher("wide")
    distiller = Distiller(model, teacher, temperature=2.0, alpha=alpha)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return distiller, teacher


def test_fit_changes_the_student_and_never_the_teacher():
    keras.utils.set_random_seed(0)
    student = build_lenet5()
    distiller, teacher = compiled(student)
    x, y = xy()
    before_student, before_teacher = student.get_weights(), teacher.get_weights()
    history = distiller.fit(x, y, batch_size=32, epochs=1, validation_data=xy(16, 1), verbose=0).history
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.array_equal(a, b) for a, b in zip(before_teacher, teacher.get_weights(), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(before_student, student.get_weights(), strict=True))
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0))  # it *is* the student


def test_alpha_zero_is_plain_training_on_the_labels():
    x, y = xy()
    keras.utils.set_random_seed(0)
    a = build_lenet5()
    keras.utils.set_random_seed(0)
    b = build_lenet5()
    distiller, _ = compiled(a, alpha=0.0)
    b.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch, parameters", [("wide", 878_762), ("deep", 429_482)])
def test_teachers_keep_the_model_contract(arch, parameters):
    teacher = build_teacher(arch)
    assert teacher.count_params() == parameters
    assert teacher.input_shape == (None, 28, 28, 1) and teacher.output_shape == (None, 10)


def test_unknown_teacher_is_a_value_error():
    with pytest.raises(ValueError, match="wide, deep"):
        build_teacher("resnet")
