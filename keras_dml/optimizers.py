"""The parameter-group optimiser ``MetricModel`` trains with, and schedules.

``ParameterGroupOptimizer`` holds one clone of the user's optimiser per parameter
group ("backbone", "head", "proxies"): same class, same config, the learning
rate multiplied per group (proxies at ``lr x proxy_lr_multiplier``).
Multiplying the *gradients* instead would be wrong for Adam-type optimisers,
whose step ``m / sqrt(v)`` does not depend on the gradient's scale.

Why one clone per group and not just two: PyTorch's Adam/AdamW keep a step
count per parameter, started at the parameter's first update. When the
backbone is frozen for a warm-up (the Proxy Anchor recipe), its first Adam
steps afterwards use bias correction for step 1, 2, ...; Keras optimisers
use one ``iterations`` counter for all their variables. A separate clone per
group keeps PyTorch's semantics: the backbone's clone starts counting when
the backbone starts training. Learning-rate schedules are still evaluated at
the *global* step (the wrapper's ``iterations``), as the authors' per-epoch
``StepLR`` is.
"""

import keras
from keras import ops

from keras_dml import _keras_hooks

GROUPS = ("backbone", "head", "proxies")

_Schedule = keras.optimizers.schedules.LearningRateSchedule


@keras.saving.register_keras_serializable(package="keras_dml")
class ScaledSchedule(_Schedule):
    """``multiplier * schedule(step)``: a schedule scaled by a constant."""

    def __init__(self, schedule, multiplier):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        if not isinstance(schedule, _Schedule):
            raise TypeError(
                "schedule must be a keras LearningRateSchedule; got "
                f"{type(schedule).__name__}.")
        self.schedule = schedule
        self.multiplier = float(multiplier)

    def __call__(self, step):
        lr = self.schedule(step)
        return lr * ops.cast(self.multiplier, lr.dtype)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "multiplier": self.multiplier}


def step_decay(initial_lr, steps_per_epoch, step_epochs, gamma=0.5):
    """Step learning-rate decay in epochs, as a Keras schedule of the step.

    With an int ``step_epochs`` (PyTorch ``StepLR(step_size, gamma)``, the
    Proxy Anchor authors' scheduler stepped once per epoch):

        lr(step) = initial_lr * gamma ** floor(epoch / step_epochs),
        epoch = floor(step / steps_per_epoch)

    With a list of epochs (``MultiStepLR(milestones, gamma)``): ``lr`` is
    multiplied by ``gamma`` at each listed epoch. ``step`` is the optimiser's
    0-based iteration count, so the first step of epoch e has step
    ``e * steps_per_epoch``.
    """
    steps_per_epoch = int(steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1; got {steps_per_epoch}.")
    if isinstance(step_epochs, (list, tuple)):
        milestones = sorted(int(e) for e in step_epochs)
        if not milestones:
            return keras.optimizers.schedules.PiecewiseConstantDecay(
                [0], [float(initial_lr), float(initial_lr)])
        if milestones[0] < 1:
            raise ValueError(f"milestone epochs must be >= 1; got {milestones}.")
        # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i].
        boundaries = [e * steps_per_epoch - 1 for e in milestones]
        values = [float(initial_lr) * float(gamma) ** i
                  for i in range(len(milestones) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    step_epochs = int(step_epochs)
    if step_epochs < 1:
        raise ValueError(f"step_epochs must be >= 1; got {step_epochs}.")
    return keras.optimizers.schedules.ExponentialDecay(
        float(initial_lr), decay_steps=step_epochs * steps_per_epoch,
        decay_rate=float(gamma), staircase=True)


def _clip_by_global_norm(grads, clip_norm):
    """``g * clip_norm / max(global_norm, clip_norm)`` for every ``g``
    (``tf.clip_by_global_norm``), the norm taken over all of them together."""
    squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads]
    norm = ops.sqrt(ops.sum(ops.stack(squares)))
    scale = clip_norm / ops.maximum(norm, clip_norm)
    return [g * ops.cast(scale, g.dtype) for g in grads]


class _GlobalStepLR:
    """Zero-argument learning rate: ``schedule(owner.iterations)``.

    Given to the group clones so that every group's schedule reads the
    global step, whatever the clone's own (per-group) iteration count.
    """

    def __init__(self, owner, schedule):
        self._owner = owner
        self.schedule = schedule

    def __call__(self):
        return self.schedule(self._owner.iterations)


class _Untracked:
    """Holds a value out of Keras' and TensorFlow's attribute tracking (a
    list of model variables set on an optimiser would become its own)."""

    def __init__(self, value):
        self.value = value


@keras.saving.register_keras_serializable(package="keras_dml")
class ParameterGroupOptimizer(keras.optimizers.Optimizer):
    """Per-group clones of one optimiser: a learning-rate multiplier per
    parameter group (the proxies'), value clipping, and per-group step
    counts (so a backbone frozen for a warm-up starts Adam's bias
    correction when it starts training).

    ``MetricModel.compile`` builds this from the optimiser you pass; you do
    not normally create it yourself.

    Args:
      optimizer: the optimiser to clone (instance, name or config). It is not
        modified and not used itself: each group gets
        ``type(optimizer).from_config(optimizer.get_config())`` with the
        learning rate multiplied by the group's multiplier (a constant rate
        times the multiplier; a ``LearningRateSchedule`` wrapped in
        ``ScaledSchedule``, evaluated at the global step).
      multipliers: {group: learning-rate multiplier}; groups missing are 1.
      clip_value: if set, element-wise gradient clipping to
        [-clip_value, clip_value] (PyTorch ``clip_grad_value_``) on every
        group (the optimiser's ``clipvalue``).

    ``apply`` skips a group whose gradients are all None (a frozen
    backbone). ``stateless_apply`` (Keras' JAX trainer) is the base
    class's: ``apply`` inside a ``StatelessScope``, every clone's variables
    being among ``variables``.

    ``apply`` expects gradients already summed over replicas (``MetricModel``
    all-reduces them once before clipping so that clipping, global-norm
    clipping and loss-scale checks see the true global gradient); the clones'
    own cross-replica sum is switched off
    (``_keras_hooks.skip_cross_replica_gradient_sum``). Variables are
    assigned to groups by the function set with ``set_group_fn``
    (``MetricModel`` does this); without one everything is in "backbone". ``global_clipnorm`` of the
    optimiser is applied over all groups together.
    """

    def __init__(self, optimizer, multipliers=None, clip_value=None,
                 name="parameter_group_optimizer", **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        if isinstance(optimizer, dict):
            optimizer = keras.saving.deserialize_keras_object(optimizer)
        optimizer = keras.optimizers.get(optimizer)
        if isinstance(optimizer, (ParameterGroupOptimizer,
                                  keras.optimizers.LossScaleOptimizer)):
            raise ValueError(
                "ParameterGroupOptimizer clones a plain optimiser (e.g. "
                "AdamW); got a "
                f"{type(optimizer).__name__}.")
        multipliers = dict(multipliers or {})
        unknown = set(multipliers) - set(GROUPS)
        if unknown:
            raise ValueError(f"Unknown parameter groups {sorted(unknown)}; "
                             f"groups are {GROUPS}.")
        for group, value in multipliers.items():
            if not float(value) > 0:
                raise ValueError(
                    f"learning-rate multiplier of {group!r} must be > 0; got {value}.")
        self.multipliers = {g: float(multipliers.get(g, 1.0)) for g in GROUPS}
        if clip_value is not None:
            clip_value = float(clip_value)
            if not clip_value > 0:
                raise ValueError(f"clip_value must be > 0; got {clip_value}.")
            if optimizer.clipnorm or optimizer.global_clipnorm:
                raise ValueError(
                    "clip_value clips gradient values; the optimiser already "
                    "clips by norm (clipnorm / global_clipnorm). Use one.")
        self.clip_value = clip_value
        self.base_config = keras.saving.serialize_keras_object(optimizer)
        self.global_clipnorm_all = optimizer.global_clipnorm
        base_lr = _keras_hooks.configured_learning_rate(optimizer)
        if isinstance(base_lr, keras.Variable):
            base_lr = float(base_lr.numpy())
        self._base_lr = base_lr
        self._group_fn = None
        self._clones = []
        for group in GROUPS:
            config = optimizer.get_config()
            config["name"] = f"{optimizer.name}_{group}"
            config["global_clipnorm"] = None
            if clip_value is not None:
                config["clipvalue"] = clip_value
            config["learning_rate"] = 0.0   # set below
            clone = type(optimizer).from_config(config)
            clone.learning_rate = self._group_lr(group, base_lr)
            _keras_hooks.copy_weight_decay_exclusions(optimizer, clone)
            # MetricModel sums gradients over replicas before apply().
            _keras_hooks.skip_cross_replica_gradient_sum(clone)
            self._clones.append(clone)

    # -- groups --------------------------------------------------------------
    def _group_lr(self, group, lr):
        mult = self.multipliers[group]
        if isinstance(lr, _Schedule):
            schedule = lr if mult == 1.0 else ScaledSchedule(lr, mult)
            return _GlobalStepLR(self, schedule)
        if callable(lr):
            return (lambda: lr() * mult) if mult != 1.0 else lr
        return float(lr) * mult

    def group_optimizer(self, group):
        """The clone that updates ``group`` ("backbone", "head", "proxies")."""
        return self._clones[GROUPS.index(group)]

    def set_group_fn(self, group_fn):
        """``group_fn(variable) -> group name``, read when building."""
        if self.built:
            raise ValueError("set_group_fn must be called before build().")
        self._group_fn = group_fn

    def _group_of(self, variable):
        if self._group_fn is None:
            return "backbone"
        group = self._group_fn(variable)
        if group not in GROUPS:
            raise ValueError(f"group_fn returned {group!r}; groups are {GROUPS}.")
        return group

    def _split(self, grads, variables):
        parts = {g: ([], []) for g in GROUPS}
        for grad, var in zip(grads, variables):
            group = self._groups_by_id.get(id(var))
            if group is None:
                raise ValueError(
                    f"Variable {var.path} was not given to build().")
            parts[group][0].append(grad)
            parts[group][1].append(var)
        return parts

    # -- optimizer API -------------------------------------------------------
    def build(self, var_list):
        var_list = list(var_list)
        # Keyed by identity: apply() gets the same Variable objects (the
        # holder keeps them alive, so ids are not reused).
        self._built_variables = _Untracked(var_list)
        self._groups_by_id = {id(v): self._group_of(v) for v in var_list}
        for group, clone in zip(GROUPS, self._clones):
            clone.build([v for v in var_list
                         if self._groups_by_id[id(v)] == group])
        super().build(var_list)

    @property
    def variables(self):
        out = list(super().variables)
        for clone in self._clones:
            out.extend(clone.variables)
        return out

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = self._built_variables.value
        trainable_variables = list(trainable_variables)
        grads = list(grads)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        if self.global_clipnorm_all:
            present = [i for i, g in enumerate(grads) if g is not None]
            clipped = _clip_by_global_norm(
                [grads[i] for i in present], self.global_clipnorm_all)
            for i, g in zip(present, clipped):
                grads[i] = g
        parts = self._split(grads, trainable_variables)
        for group, clone in zip(GROUPS, self._clones):
            group_grads, group_vars = parts[group]
            # A group without any gradient (the backbone in a warm-up step,
            # given as None) is not stepped: its clone keeps its step count.
            if any(g is not None for g in group_grads):
                clone.apply(group_grads, group_vars)
        self.iterations.assign_add(1)

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars)
        self.apply(grads, variables)
        return self.iterations

    @property
    def learning_rate(self):
        """The base learning rate (the "backbone" and "head" groups')."""
        return self._clones[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        # Sets every group's rate (times its multiplier); the wrapper's own
        # placeholder rate (0.0, from the base class) is never used.
        if isinstance(learning_rate, keras.Variable):
            learning_rate = float(learning_rate.numpy())
        if not callable(learning_rate) and callable(self._base_lr):
            raise TypeError(
                "This optimizer was created with a learning-rate schedule; "
                "its learning rate cannot be set to a constant.")
        self._base_lr = learning_rate
        for group, clone in zip(GROUPS, self._clones):
            clone.learning_rate = self._group_lr(group, learning_rate)

    def scale_loss(self, loss):
        return self._clones[0].scale_loss(loss)

    def finalize_variable_values(self, var_list):
        var_list = list(var_list)
        parts = self._split([None] * len(var_list), var_list)
        for group, clone in zip(GROUPS, self._clones):
            if parts[group][1]:
                clone.finalize_variable_values(parts[group][1])

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": self.base_config,
            "multipliers": dict(self.multipliers),
            "clip_value": self.clip_value,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"], custom_objects=custom_objects)
        return cls(**config)

