"""utils/callbacks.Callbacks: v6.0 hook names, registration order, clear errors."""
import pytest

from utils.training.callbacks import HOOKS, Callbacks

V6_HOOKS = ["on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start", "on_train_epoch_start",
            "on_train_batch_start", "optimizer_step", "on_before_zero_grad", "on_train_batch_end",
            "on_train_epoch_end", "on_val_start", "on_val_batch_start", "on_val_image_end", "on_val_batch_end",
            "on_val_end", "on_fit_epoch_end", "on_model_save", "on_train_end", "on_params_update", "teardown"]


def test_hook_names_are_v6():
    assert list(HOOKS) == V6_HOOKS
    assert set(Callbacks().get_registered_actions()) == set(V6_HOOKS)


def test_actions_run_in_registration_order_with_arguments():
    calls = []
    cb = Callbacks()
    cb.register_action("on_fit_epoch_end", "csv", lambda vals, epoch: calls.append(("csv", vals, epoch)))
    cb.register_action("on_fit_epoch_end", "tb", lambda vals, epoch: calls.append(("tb", vals, epoch)))
    cb.register_action("on_train_end", "other", lambda: calls.append("end"))
    cb.run("on_fit_epoch_end", [1.0, 2.0], epoch=3)
    assert calls == [("csv", [1.0, 2.0], 3), ("tb", [1.0, 2.0], 3)]
    cb.run("on_train_start")  # no actions: nothing happens
    cb.run("on_train_end")
    assert calls[-1] == "end"
    names = [a["name"] for a in cb.get_registered_actions("on_fit_epoch_end")]
    assert names == ["csv", "tb"]


def test_registries_are_per_instance():
    a, b = Callbacks(), Callbacks()
    a.register_action("teardown", "x", print)
    assert len(a.get_registered_actions("teardown")) == 1
    assert b.get_registered_actions("teardown") == []


def test_unknown_hook_is_a_clear_error():
    cb = Callbacks()
    with pytest.raises(ValueError, match="unknown callback hook 'on_epoch_end'.*on_train_epoch_end"):
        cb.register_action("on_epoch_end", "x", print)
    with pytest.raises(ValueError, match="unknown callback hook 'on_val_ends'"):
        cb.run("on_val_ends")
    with pytest.raises(ValueError, match="unknown callback hook"):
        cb.get_registered_actions("nope")


def test_non_callable_callback_is_rejected():
    with pytest.raises(TypeError, match="callback 'bad' for hook 'on_model_save' is not callable"):
        Callbacks().register_action("on_model_save", "bad", 42)


def test_callback_exception_propagates_and_stop_flag_exists():
    cb = Callbacks()
    assert cb.stop_training is False

    def boom():
        raise RuntimeError("logger failed")
    cb.register_action("on_train_start", "boom", boom)
    with pytest.raises(RuntimeError, match="logger failed"):
        cb.run("on_train_start")
