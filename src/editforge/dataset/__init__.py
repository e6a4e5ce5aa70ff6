"""Dataset tools: read any edit dataset as samples, check it, export it for a trainer, import it.

    from editforge.dataset import load_samples, check_samples, export_dataset, import_to_workbook

    data = load_samples("book.xlsx", only_accepted=True)       # .samples, .skipped, .format
    report = check_samples(data.samples)                       # .errors, .warnings, .issues
    export_dataset(data.samples, "diffsynth", "out/", model_family="qwen-image-edit-2509")
    import_to_workbook(load_samples("ultraedit.parquet").samples, "imported.xlsx")
"""

from editforge.dataset.check import CheckOptions, CheckReport, Issue, check_samples
from editforge.dataset.export import EDIT_FAMILIES, EXPORT_FORMATS, ExportResult, export_dataset
from editforge.dataset.importer import import_to_workbook
from editforge.dataset.sample import Columns, Dataset, Sample
from editforge.dataset.sources import SOURCE_FORMATS, load_samples

__all__ = [
    "Sample", "Dataset", "Columns", "load_samples", "SOURCE_FORMATS",
    "check_samples", "CheckOptions", "CheckReport", "Issue",
    "export_dataset", "ExportResult", "EXPORT_FORMATS", "EDIT_FAMILIES",
    "import_to_workbook",
]
