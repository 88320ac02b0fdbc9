"""Hook points of the training and validation loops.

Loggers, plots and the MetricCollector attach functions to named hooks instead of being called
directly from the loop, so the loop stays short and each add-on stays in its own module. The hook
names are those of upstream YOLOv5 v6.0, so callbacks written for it register unchanged.
"""

HOOKS = (
    # train.py
    "on_pretrain_routine_start",
    "on_pretrain_routine_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "optimizer_step",  # after each optimizer step, no arguments
    "on_before_zero_grad",  # right after it, before the gradients are cleared
    "on_train_batch_end",
    "on_train_epoch_end",
    # val.py
    "on_val_start",
    "on_val_batch_start",
    "on_val_image_end",
    "on_val_batch_end",
    "on_val_end",
    # train.py, after validation
    "on_fit_epoch_end",  # fit = train + val
    "on_model_save",
    "on_train_end",
    "on_params_update",  # once before training, with the hyperparameters in effect (loss gains scaled)
    "teardown",  # last of all, no arguments
)


class Callbacks:
    """Registry of actions per hook; `run(hook, ...)` calls them in registration order."""

    def __init__(self):
        self._actions = {hook: [] for hook in HOOKS}
        self.stop_training = False  # a callback may set this to ask the loop to stop

    def _check_hook(self, hook):
        if hook not in self._actions:
            raise ValueError(f"unknown callback hook '{hook}'; valid hooks are: {', '.join(HOOKS)}")

    def register_action(self, hook, name="", callback=None):
        """Attach `callback` to `hook`; `name` identifies it in get_registered_actions()."""
        self._check_hook(hook)
        if not callable(callback):
            raise TypeError(f"callback '{name}' for hook '{hook}' is not callable: {callback!r}")
        self._actions[hook].append({"name": name, "callback": callback})

    def get_registered_actions(self, hook=None):
        """The actions of one hook, or the whole {hook: actions} mapping."""
        if hook is None:
            return self._actions
        self._check_hook(hook)
        return self._actions[hook]

    def run(self, hook, *args, **kwargs):
        """Call every action of `hook` with the given arguments."""
        self._check_hook(hook)
        for action in self._actions[hook]:
            action["callback"](*args, **kwargs)
