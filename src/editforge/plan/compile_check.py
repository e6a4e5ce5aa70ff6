"""How often torch.compile compiles across a synth run: graph breaks and recompiles of the compiled blocks.

A synth run's rows differ in output size (the last input's aspect ratio) and in how many reference images
they have, so the transformer's sequence length changes from row to row. Compiling per shape would cost a
compile per new size; `editforge.models.speed.compile_blocks` compiles with dynamic shapes, and this check
runs rows of different sizes and reference counts through `editforge.generate` and counts what dynamo did.
The backend is "eager" (dynamo's capture without inductor's code generation): graph breaks and
recompiles are decided by dynamo's capture and guards, the same for every backend, and inductor's C++
build would cost minutes on a CPU.
"""

from __future__ import annotations

from PIL import Image

# (output side x side of the last input, references): sizes and reference counts a synth run mixes.
ROWS = (((64, 64), 1), ((96, 64), 1), ((64, 96), 2), ((80, 80), 3), ((128, 64), 2), ((64, 64), 3))


def compile_report(pipe, rows=ROWS) -> dict:
    """{"rows", "graphs", "graph_breaks", "recompiles"} for `rows` generated with `pipe`'s blocks compiled."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    import editforge
    from editforge.models.speed import compile_blocks

    torch._dynamo.reset()
    counters.clear()
    compile_blocks(pipe.transformer, backend="eager")
    graphs = []
    for i, (size, references) in enumerate(rows):
        images = [Image.new("RGB", size, (40 * i % 255, 90, 160)) for _ in range(references)]
        editforge.generate(pipe, images, "make the sky red", seed=i, steps=2)
        graphs.append(counters["stats"]["unique_graphs"])
    return {"rows": len(rows), "graphs": graphs[-1], "graphs_after_each_row": graphs,
            "graph_breaks": sum(counters["graph_break"].values()),
            "recompiles": graphs[-1] - graphs[0]}
