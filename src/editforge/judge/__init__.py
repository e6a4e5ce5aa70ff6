"""The judge: the pipeline's own Qwen2.5-VL text encoder (or another Qwen2.5-VL) scores generated pairs.

    from editforge.judge import Pair, judge_from_pipeline, load_judge, score_pairs

`model` loads the judge and checks it has a real language-model head, `prompts` holds the exact questions,
`ask` asks them (batched, deterministic), `workbook` runs the judge over a synth workbook with the journal.
See docs/judge.md.
"""

from editforge.judge.ask import Pair, draft_instructions, explain_pairs, score_pairs
from editforge.judge.model import Judge, check_head, judge_from_pipeline, load_judge

__all__ = ["Judge", "Pair", "check_head", "draft_instructions", "explain_pairs", "judge_from_pipeline", "load_judge",
           "score_pairs"]
