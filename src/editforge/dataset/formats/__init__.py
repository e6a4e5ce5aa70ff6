"""One module per dataset layout: how to read it as samples and, for trainer layouts, how to write it.

The names of the layouts live here, where reading them costs nothing (the command line lists them in its
`--help`); `editforge.dataset.sources` and `editforge.dataset.export` hold the readers and writers.
"""

SOURCE_FORMATS = ("workbook", "diffsynth", "musubi", "hf", "folders")  # what `load_samples` reads
EXPORT_FORMATS = ("diffsynth", "simpletuner", "aitoolkit", "musubi", "hf")  # what `export_dataset` writes
