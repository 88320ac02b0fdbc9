"""Attach the MetricCollector (utils_mlu/metric.py) to the training loop's callbacks.

Active only when BENCHMARK_LOG names an output file, as Cambricon's benchmark tooling expects.
Every training iteration is one sample, measured from the end of the previous iteration to the
end of this one, so the wait for the next batch is included (as Cambricon's benchmark tooling measures).
"""
import logging
import sys
from pathlib import Path

LOGGER = logging.getLogger("yolov5")
REPO_ROOT = Path(__file__).resolve().parents[3]


def _collector_class():
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    from utils_mlu.metric import MetricCollector
    return MetricCollector


def model_name(opt):
    """The net name for the log: the cfg's or the weights' file stem (e.g. yolov5m)."""
    source = opt.cfg or opt.weights or "yolov5"
    return Path(str(source)).stem


class BenchmarkHooks:
    def __init__(self, opt, device):
        self.opt, self.device = opt, device
        self.main_process = device.local_rank in (-1, 0)
        self.collector = _collector_class()(enable_only_benchmark=True, record_elapsed_time=True,
                                            record_hardware_time=device.kind == "mlu", device=device)
        self.enabled = self.collector.enabled

    def register(self, callbacks):
        callbacks.register_action("on_train_start", "benchmark", self._start)
        callbacks.register_action("on_train_batch_end", "benchmark", self._batch_end)

    def _start(self, *args, **kwargs):
        self.device.reset_peak_memory()
        self.collector.place()

    def _batch_end(self, *args, **kwargs):
        self.collector.record()
        self.collector.place()

    def finish(self):
        """Write the log line (main process) and print the throughput summary."""
        if not self.enabled:
            return None
        world = max(self.device.world_size, 1)
        amp = self.device.amp_default(self.opt.pyamp)
        self.collector.insert_metrics(net=model_name(self.opt), batch_size=self.opt.batch_size // world,
                                      cards=world, precision="amp" if amp else "fp32",
                                      DPF_mode="ddp" if world > 1 else "single")
        metrics = self.collector.get_metrics()
        if not self.main_process:
            return metrics
        self.collector.dump()
        t = metrics.get("batch_time_avg")
        if isinstance(t, (int, float)) and t > 0:
            throughput = metrics["batch_size"] / t * world
            LOGGER.info(f"Benchmark: {metrics.get('iterations')} iterations timed, batch_time_avg {t:.4f} s, "
                        f"throughput {throughput:.2f} images/s on {world} card(s); log appended to "
                        f"{self.collector.targets.get('BENCHMARK_LOG')}")
        else:
            LOGGER.warning(f"Benchmark: {metrics.get('status')}")
        return metrics
