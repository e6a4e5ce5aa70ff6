"""What the judge asks, word for word (docs/judge.md quotes these; a test checks the model sees exactly them).

Every question is one user turn of Qwen2.5-VL's chat format, the images first, in this order: the input
images in slot order (`ref_image_1..3`), then the output (`raw_image`); each image is introduced by its
role so the model can tell them apart:

    <|im_start|>system
    {SYSTEM}<|im_end|>
    <|im_start|>user
    Input image 1: <|vision_start|><|image_pad|><|vision_end|>
    ...
    Output image: <|vision_start|><|image_pad|><|vision_end|>
    {question}<|im_end|>
    <|im_start|>assistant
"""

from __future__ import annotations

SYSTEM = "You are a careful judge of image edits."

SCORE_QUESTION = (
    "Instruction: {instruction}\n"
    "Does the output image follow the instruction, while keeping everything the instruction does not ask "
    "to change as it is in the input image(s)? Answer yes or no."
)
# The score is P(yes) against P(no) at the first answer token; these words (first token of each) count.
YES_WORDS = ("Yes", "yes")
NO_WORDS = ("No", "no")

REASON_QUESTION = (
    "Instruction: {instruction}\n"
    "In one short sentence: does the output image follow the instruction and keep everything else of the "
    "input image(s)? If not, say what is wrong."
)

INSTRUCTION_QUESTION = (
    "Write the editing instruction that turns the input image(s) into the output image, as a person would "
    "type it to an image editor. Answer with the instruction only, one sentence."
)


def image_lines(inputs: int) -> str:
    lines = [f"Input image {i}: <|vision_start|><|image_pad|><|vision_end|>" for i in range(1, inputs + 1)]
    return "\n".join([*lines, "Output image: <|vision_start|><|image_pad|><|vision_end|>"])


def chat(inputs: int, question: str) -> str:
    """The whole prompt text for `inputs` input images (plus the output) and one question."""
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{image_lines(inputs)}\n{question}"
            "<|im_end|>\n<|im_start|>assistant\n")
