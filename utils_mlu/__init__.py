"""Benchmark and environment helpers from Cambricon's YOLOv5 MLU port, rewritten: MetricCollector
(metric.py), the field lists of each benchmark log (configs.json), an environment report
(collect_env.py) and shell helpers for benchmark scripts (common_utils.sh)."""
