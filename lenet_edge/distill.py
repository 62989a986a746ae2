"""Knowledge distillation: a student learns a teacher's softened scores as well as the labels.

`Distiller(student, teacher, temperature, alpha)` is a Keras model whose
`fit` trains only the student. For each batch the teacher scores the *same*
augmented images the student sees (consistent teaching: Beyer et al. 2022,
"a good teacher is patient and consistent"), and the loss is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
        + (1 - alpha) * CE(true labels, smoothed; student)

with the T^2 factor of Hinton et al. (2015), which keeps the soft term's
gradients at the scale of the hard term's whatever the temperature.
Validation (`evaluate`, `fit`'s val_* figures) measures the student alone
against the true labels, so epochs are chosen by what the student does.
"""

from __future__ import annotations

from .compat import keras, tf


def soft_target_loss(teacher_logits, student_logits, temperature: float):
    """Per-image `T^2 * KL(softmax(t/T) || softmax(s/T))`, shape (B,)."""
    t = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)  # (B, 10)
    s = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    return temperature**2 * tf.reduce_sum(tf.exp(t) * (t - s), axis=-1)


class Distiller(keras.Model):
    """Train `student` on `alpha` x the teacher's soft targets + `1 - alpha` x the compiled (hard) loss."""

    def __init__(self, student: keras.Model, teacher: keras.Model, temperature: float, alpha: float):
        super().__init__(name="distiller")
        self.student, self.teacher = student, teacher
        self.temperature, self.alpha = float(temperature), float(alpha)
        teacher.trainable = False

    def call(self, x, training=False):
        return self.student(x, training=training)

    def train_step(self, data):
        x, y = data
        teacher_logits = self.teacher(x, training=False)  # (B, 10): BN statistics and dropout in inference mode
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            hard = self.compiled_loss(y, logits, regularization_losses=self.student.losses)
            soft = tf.reduce_mean(soft_target_loss(teacher_logits, logits, self.temperature))
            loss = self.alpha * soft + (1.0 - self.alpha) * hard
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.compiled_metrics.update_state(y, logits)
        # `loss` in the history is what was minimised; the metrics are the student's on the true labels.
        return {"loss": loss, **{m.name: m.result() for m in self.metrics if m.name != "loss"}}
