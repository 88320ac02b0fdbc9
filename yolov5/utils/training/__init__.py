"""Training: the trainer and its set-up, state, optimizer, loss, EMA, early stop, evolve, callbacks, loggers."""
