"""The depth metrics by name: their order, their direction and the ones one-line summaries show.

Below every layer that names a metric (config validation, evaluation, promotion, sweeps), so that
none of them reaches up into `depthkd.eval` for a list of strings.
"""

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
HIGHER_IS_BETTER = frozenset({"d1", "d2", "d3"})  # the accuracies; every other metric is an error
HEADLINE_METRICS = ("abs_rel", "rmse", "d1")  # what one-line summaries show
