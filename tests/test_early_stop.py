"""utils/early_stop.EarlyStopping: v6.0 patience semantics (ties move the best epoch forward)."""
import logging

import pytest

from utils.training.early_stop import EarlyStopping


def run(stopper, fitnesses):
    """(stop, possible_stop, best_epoch) after each epoch."""
    out = []
    for epoch, f in enumerate(fitnesses):
        stop = stopper(epoch, f)
        out.append((stop, stopper.possible_stop, stopper.best_epoch))
    return out


def test_stops_after_patience_epochs_without_improvement(caplog):
    stopper = EarlyStopping(patience=3)
    with caplog.at_level(logging.INFO, logger="yolov5"):
        got = run(stopper, [0.1, 0.3, 0.2, 0.2, 0.25, 0.29])
    assert got == [(False, False, 0), (False, False, 1), (False, False, 1),
                   (False, True, 1),  # 2 epochs waited = patience - 1: the next one may be the last
                   (True, True, 1), (True, True, 1)]
    assert stopper.best_fitness == 0.3
    assert "Best epoch was 1" in caplog.text and "--patience" in caplog.text


def test_ties_move_the_best_epoch_forward():
    stopper = EarlyStopping(patience=2)
    got = run(stopper, [0.5, 0.5, 0.5, 0.5, 0.4, 0.4])
    assert [g[2] for g in got] == [0, 1, 2, 3, 3, 3]
    assert [g[0] for g in got] == [False, False, False, False, False, True]


def test_constant_zero_fitness_never_stops():
    """--noval runs log fitness 0 every epoch: ties keep resetting the count."""
    stopper = EarlyStopping(patience=1)
    assert not any(stopper(e, 0.0) for e in range(50))
    assert stopper.best_epoch == 49


@pytest.mark.parametrize("patience", [0, None])
def test_patience_zero_disables(patience):
    stopper = EarlyStopping(patience=patience)
    assert not any(stopper(e, 1.0 / (e + 1)) for e in range(500))
    assert stopper.best_epoch == 0 and not stopper.possible_stop


def test_default_patience_is_30():
    stopper = EarlyStopping()
    got = run(stopper, [1.0] + [0.5] * 30)
    assert [g[0] for g in got].index(True) == 30


def test_state_round_trip_resumes_the_count():
    a = EarlyStopping(patience=4)
    run(a, [0.1, 0.4, 0.3, 0.3])
    b = EarlyStopping(patience=4)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == {"best_fitness": 0.4, "best_epoch": 1, "possible_stop": False}
    assert [b(e, 0.2) for e in (4, 5)] == [False, True]
