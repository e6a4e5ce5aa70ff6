"""`check_samples` finds each problem it promises, on real files, and stays quiet on a clean set."""

from __future__ import annotations


from PIL import Image

from editforge.dataset import CheckOptions, check_samples
from editforge.dataset.sample import Sample
from tests.helpers import write_image


def kinds(report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for issue in report.issues:
        found.setdefault(issue.kind, []).append(issue.sample)
    return found


def test_clean_samples_have_no_issues(tmp_path):
    samples = [Sample(str(i), write_image(tmp_path / f"t{i}.png", i, (300, 300)),
                      (write_image(tmp_path / f"c{i}.png", 50 + i, (300, 300)),), f"edit {i}") for i in range(3)]
    report = check_samples(samples, workers=1)
    assert report.issues == [] and report.errors == report.warnings == 0 and report.images == 6


def test_each_problem_is_reported_with_its_severity(tmp_path):
    ok_t = write_image(tmp_path / "ok_t.png", 1, (300, 300))
    ok_c = write_image(tmp_path / "ok_c.png", 2, (300, 300))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(ok_t.read_bytes()[:200])  # truncated PNG
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    tiny = write_image(tmp_path / "tiny.png", 3, (40, 40))
    wide = write_image(tmp_path / "wide.png", 4, (900, 300))
    samples = [
        Sample("missing", tmp_path / "gone.png", (ok_c,), "x"),
        Sample("corrupt", ok_t, (corrupt,), "x"),
        Sample("notimage", not_image, (ok_c,), "x"),
        Sample("hostile", ok_t, (ok_c,), "x", problems=("hostile path '../../x' leaves the dataset folder /d",)),
        Sample("empty", ok_t, (ok_c,), "   "),
        Sample("toomany", ok_t, (ok_c,) * 4, "x"),
        Sample("nocontrol", ok_t, (), "x"),
        Sample("tiny", tiny, (ok_c,), "x"),
        Sample("aspect", ok_t, (wide,), "x"),
    ]
    report = check_samples(samples, CheckOptions(near_distance=0), workers=1)
    found = kinds(report)
    assert found["missing"] == ["missing"] and found["unreadable"] == ["corrupt", "notimage"]
    assert found["path"] == ["hostile"] and found["empty_instruction"] == ["empty"]
    assert found["too_many_controls"] == ["toomany"] and found["no_control"] == ["nocontrol"]
    assert found["tiny"] == ["tiny"] and found["aspect_mismatch"] == ["aspect"]
    severity = {i.kind: i.severity for i in report.issues}
    assert {k for k, s in severity.items() if s == "error"} == {
        "missing", "unreadable", "path", "empty_instruction", "too_many_controls"}
    assert report.errors == 6
    data = report.to_dict()
    assert data["counts"]["unreadable"] == 2 and data["errors"] == 6 and len(data["issues"]) == len(report.issues)


def test_huge_images_warn(tmp_path):
    big = write_image(tmp_path / "big.png", 1, (600, 200))
    small = write_image(tmp_path / "c.png", 2, (600, 200))
    report = check_samples([Sample("big", big, (small,), "x")], CheckOptions(min_side=16, max_side=500), workers=1)
    assert [i.kind for i in report.issues] == ["huge", "huge"]


def test_exact_and_near_duplicates(tmp_path):
    target = write_image(tmp_path / "t.png", 1, (300, 300))
    control = write_image(tmp_path / "c.png", 2, (300, 300))
    copy = tmp_path / "t_copy.png"
    copy.write_bytes(target.read_bytes())
    # The same picture re-encoded slightly darker: other bytes, nearly the same perceptual hash.
    near = tmp_path / "t_near.jpg"
    Image.open(target).point(lambda v: max(0, v - 3)).save(near, quality=95)
    other = write_image(tmp_path / "o.png", 3, (300, 300))
    samples = [
        Sample("a", target, (control,), "make it red"),
        Sample("b", copy, (control,), "make it blue"),      # same bytes, another instruction
        Sample("c", near, (control,), "make it red"),
        Sample("d", other, (control,), "make it red"),      # shares only the control: not a duplicate
        Sample("e", near, (other,), "make it red"),         # near target, different control: not a duplicate
    ]
    found = kinds(check_samples(samples, workers=1))
    assert found["duplicate"] == ["b"]
    assert found["near_duplicate"] == ["c"]
    assert "near_duplicate" not in kinds(check_samples(samples, CheckOptions(near_distance=0), workers=1))


def test_parallel_workers_give_the_same_report(tmp_path):
    samples = []
    for i in range(40):  # 80 images: above the inline threshold, so a process pool runs
        samples.append(Sample(str(i), write_image(tmp_path / f"t{i}.png", i, (32, 32)),
                              (write_image(tmp_path / f"c{i}.png", 1000 + i, (32, 32)),), "" if i % 7 == 0 else "x"))
    (tmp_path / "c3.png").write_bytes(b"garbage")
    serial = check_samples(samples, workers=1)
    parallel = check_samples(samples, workers=2)
    assert serial.issues == parallel.issues
    assert kinds(parallel)["unreadable"] == ["3"] and len(kinds(parallel)["empty_instruction"]) == 6


def test_a_control_shared_by_many_samples_is_decoded_once(tmp_path):
    control = write_image(tmp_path / "c.png", 1)
    samples = [Sample(str(i), write_image(tmp_path / f"t{i}.png", 10 + i), (control,), "x") for i in range(5)]
    assert check_samples(samples, workers=1).images == 6


def test_controls_are_checked_against_the_model_family(tmp_path):
    target = write_image(tmp_path / "t.png", 1, (300, 300))
    control = write_image(tmp_path / "c.png", 2, (300, 300))
    samples = [Sample("none", target, (), "x"), Sample("one", target, (control,), "y"),
               Sample("two", target, (control, control), "z")]

    def issues(family):
        report = check_samples(samples, CheckOptions(near_distance=0, model_family=family), workers=1)
        return {(i.severity, i.kind, i.sample): i.detail for i in report.issues if i.kind != "duplicate"}

    # Edit v1's prompt template always holds an image: a sample without one cannot be encoded for it.
    assert issues("qwen-image-edit") == {
        ("error", "no_control", "none"): "0 controls; qwen-image-edit trains on samples with one control image",
        ("error", "too_many_controls", "two"): "2 controls; qwen-image-edit trains on samples with one control image"}
    assert issues("qwen-image-edit-2509") == {}
    assert issues(None) == {("warning", "no_control", "none"): "no control image: editforge train takes it as a "
                            "text-to-image sample for Edit-2509; Edit v1 and other trainers cannot use it"}
