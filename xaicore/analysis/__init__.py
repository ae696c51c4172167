"""Model- and dataset-level analyses (survey §6.6, §7): activation maximisation (:func:`maximize`, Erhan et al.
2009; Simonyan et al. 2014; Yosinski et al. 2015; Nguyen et al. 2016) and Erhan et al.'s dataset examples
(:func:`dataset_examples`); Network Dissection (:func:`dissect`, Bau et al. 2017), TCAV with its significance
test (:func:`tcav`, Kim et al. 2018) and SpRAy (:func:`spray`, Lapuschkin et al. 2019), over the activations
archive (:func:`write_activations`). They read models and archives, never explain a single input."""

from xaicore.analysis.activations import ACTIVATIONS_SCHEMA, open_activations, write_activations
from xaicore.analysis.dissect import DissectionResult, dissect, unit_quantiles
from xaicore.analysis.maximize import PARAMETERIZATIONS, DatasetExamples, dataset_examples, maximize
from xaicore.analysis.spray import SprayResult, spray
from xaicore.analysis.tcav import TCAVResult, tcav

__all__ = ["ACTIVATIONS_SCHEMA", "PARAMETERIZATIONS", "DatasetExamples", "DissectionResult", "SprayResult",
           "TCAVResult", "dataset_examples", "dissect", "maximize", "open_activations", "spray", "tcav",
           "unit_quantiles", "write_activations"]
