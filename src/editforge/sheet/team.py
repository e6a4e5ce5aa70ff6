"""The processes that share one synth run: this one alone, or its part of an `accelerate launch` (or torchrun).

    team = accelerate_team()      # Team() when the process was started alone
    team.index, team.size         # which share of the rows is this process's
    team.device                   # the GPU accelerate gave this process (None: the default device)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Team:
    """The processes sharing one run. `share` hands the main process's value to all (a barrier)."""

    index: int = 0
    size: int = 1
    share: Callable[[Any], Any] = lambda value: value
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.index == 0


def accelerate_team() -> Team:
    """This process's team, from the environment `accelerate launch` or torchrun set up; alone without one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Team()
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # without cpu=True, PartialState on a machine with no GPU quietly runs every process as rank 0
    state = PartialState(cpu=not torch.cuda.is_available())
    return Team(index=state.process_index, size=state.num_processes,
                share=lambda value: broadcast_object_list([value], from_process=0)[0],
                device=str(state.device) if state.device.type == "cuda" else None)
