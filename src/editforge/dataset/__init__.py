"""Dataset tools: read any edit dataset as samples, check it, export it for a trainer, import it.

    from editforge.dataset import load_samples, check_samples, export_dataset, import_to_workbook

    data = load_samples("book.xlsx", only_accepted=True)       # .samples, .skipped, .format
    report = check_samples(data.samples)                       # .errors, .warnings, .issues
    export_dataset(data.samples, "diffsynth", "out/", model_family="qwen-image-edit-2509")
    import_to_workbook(load_samples("ultraedit.parquet").samples, "imported.xlsx")
"""

# Imported on first use, so that a light submodule (the format names the command line lists) costs no numpy.
_API = {
    "Sample": "sample", "Dataset": "sample", "Columns": "sample",
    "load_samples": "sources", "SOURCE_FORMATS": "formats",
    "check_samples": "check", "CheckOptions": "check", "CheckReport": "check", "Issue": "check",
    "export_dataset": "export", "ExportResult": "export", "EXPORT_FORMATS": "formats", "EDIT_FAMILIES": "export",
    "import_to_workbook": "importer",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"editforge.dataset.{_API[name]}"), name)
    raise AttributeError(f"module 'editforge.dataset' has no attribute {name!r}")
