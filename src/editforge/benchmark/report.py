"""Benchmark results as a terminal table and as markdown for docs/benchmarks.md."""

from __future__ import annotations

from rich.table import Table

BUDGETS_GIB = (24, 48, 80)


def _fits(peak_gib) -> str:
    if peak_gib is None:
        return "–"
    return ", ".join(f"{b}" for b in BUDGETS_GIB if peak_gib <= b * 0.95) or "> 80"


def columns_and_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    def gib(value):
        return "–" if value is None else f"{value:.1f}"

    if result["kind"] == "infer":
        seed = {(r["references"], r["steps"]): r["seconds"] for r in result["rows"] if r["config"] == "seed"}
        columns = ["config", "refs", "steps", "s/image", "text s", "denoise s", "VAE s", "peak GiB", "fits GiB",
                   "denoise TFLOP/s", "% matmul", "vs seed"]
        rows = []
        for r in result["rows"]:
            base = seed.get((r["references"], r["steps"]))
            rows.append([
                r["config"], str(r["references"]), str(r["steps"]), f"{r['seconds']:.3f}", f"{r['text_s']:.3f}",
                f"{r['denoise_s']:.3f}", f"{r['vae_s']:.3f}", gib(r["peak_gib"]), _fits(r["peak_gib"]),
                f"{r['denoise_tflops']:.3g}", f"{100 * r['matmul_fraction']:.0f}%",
                f"{base / r['seconds']:.2f}x" if base else "–",
            ])
        return columns, rows
    columns = ["base", "resolution", "samples/s", "s/step", "peak GiB", "fits GiB", "TFLOP/s", "% matmul"]
    rows = [[r["base"], str(r["resolution"]), f"{r['samples_per_s']:.3f}", f"{r['step_s']:.3f}", gib(r["peak_gib"]),
             _fits(r["peak_gib"]), f"{r['tflops']:.3g}", f"{100 * r['matmul_fraction']:.0f}%"]
            for r in result["rows"]]
    return columns, rows


def title(result: dict) -> str:
    extra = f", fp8 vs bf16 mean |Δpixel| {result['fp8_mean_abs_pixel_diff']:.2f}/255" \
        if result.get("fp8_mean_abs_pixel_diff") is not None else ""
    family = f" · {result['family']}" if result.get("family") else ""
    return (f"{result['kind']} · {result['size']}{family} · {result['device']} · {result['dtype']} · "
            f"matmul {result['matmul_tflops']:.3g} TFLOP/s{extra}")


def table(result: dict) -> Table:
    columns, rows = columns_and_rows(result)
    out = Table(title=title(result))
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*row)
    return out


def markdown(result: dict) -> str:
    columns, rows = columns_and_rows(result)
    lines = [f"**{title(result)}**", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
