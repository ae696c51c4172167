"""Model- and dataset-level analyses (survey §6.6, §7): activation maximisation (:func:`maximize`, Erhan et al.
2009; Simonyan et al. 2014; Yosinski et al. 2015; Nguyen et al. 2016) and Erhan et al.'s dataset examples
(:func:`dataset_examples`); they read models and archives, never explain a single input."""

from xaicore.analysis.maximize import PARAMETERIZATIONS, DatasetExamples, dataset_examples, maximize

__all__ = ["PARAMETERIZATIONS", "DatasetExamples", "dataset_examples", "maximize"]
