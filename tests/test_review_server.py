"""The review server over real HTTP: the JSON API, the export button, and what it refuses to serve."""

from __future__ import annotations

import http.client
import json
import os
import time

import pytest

from editforge.errors import EditForgeError
from editforge.review.server import ReviewServer
from editforge.sheet.render import RenderLock
from editforge.sheet.workbook import open_workbook
from tests.helpers import Served, other_process_change

SECRET = b"the contents of a file outside the base dir"


@pytest.fixture
def served(tmp_path):
    served = Served(tmp_path)
    yield served
    served.stop()


def test_it_listens_on_localhost_only_by_default(served):
    assert served.server.url.startswith("http://127.0.0.1:")
    assert served.server.socket.getsockname()[0] == "127.0.0.1"


def test_a_taken_port_is_a_one_line_error(served):
    with pytest.raises(EditForgeError, match=f"cannot listen on 127.0.0.1:{served.port}.*choose another `port`"):
        ReviewServer(served.session, port=served.port)


def test_the_api_lists_rows_records_verdicts_and_regenerates(served):
    status, data = served.json("GET", "/api/rows")
    assert status == 200 and data["workbook"] == "data.xlsx"
    rows = {r["row"]: r for r in data["rows"]}
    assert data["summary"] == {"pending": 4, "accepted": 0, "rejected": 0, "queued": 1}
    assert rows[3]["urls"]["raw_image"] == "/files/" + rows[3]["images"]["raw_image"]
    status, image = served.request("GET", rows[3]["urls"]["raw_image"])
    assert status == 200 and image == (served.folder / rows[3]["images"]["raw_image"]).read_bytes()

    status, detail = served.json("GET", "/api/rows/3")
    assert detail["params"]["model"] == "fake" and detail["params"]["seed"] == rows[3]["seed"]

    status, data = served.json("POST", "/api/rows/2/verdict", {"verdict": "accepted", "seen": rows[2]["images"]})
    assert status == 200 and data["row"]["status"] == "accepted" and data["summary"]["accepted"] == 1
    status, data = served.json("POST", "/api/rows/3/regenerate", {"seen": rows[3]["images"]})
    assert status == 200 and data["row"]["status"] == "queued"
    assert data["moved_to"] == "rejected/" + rows[3]["images"]["raw_image"]
    assert (served.folder / data["moved_to"]).is_file()

    status, data = served.json("POST", "/api/rows/4/verdict", {"verdict": "accepted", "seen": {"raw_image": "old.png"}})
    assert status == 409 and "changed since you looked" in data["error"]
    status, data = served.json("POST", "/api/rows/4/verdict", {"verdict": "perhaps", "seen": rows[4]["images"]})
    assert status == 400 and "unknown verdict" in data["error"]
    assert served.json("GET", "/api/rows/7")[0] == 404

    assert served.session.write().updates == 2  # the verdict, and regenerate's three cells as one change
    book = dict(open_workbook(served.path).rows())
    assert (book[2]["review"], book[3]["raw_image"], book[3]["need_gen"]) == ("accepted", None, True)


def test_changes_must_be_json_from_this_host(served):
    status, _ = served.request("POST", "/api/rows/2/verdict", b"verdict=accepted",
                               {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415  # what a form on another web site could send
    status, _ = served.request("GET", "/api/rows", headers={"Host": "attacker.example"})
    assert status == 400  # DNS rebinding: another site's name pointing at 127.0.0.1
    status, _ = served.request("POST", "/api/rows/2/verdict", b"{not json", {"Content-Type": "application/json"})
    assert status == 400
    assert served.session.waiting_updates() == 0


def test_every_request_needs_the_token_which_the_first_visit_turns_into_a_cookie(served):
    token = served.server.token
    assert served.server.url.endswith(f"/?token={token}") and len(token) >= 24
    for path in ("/", "/api/rows", "/files/img/r0.png", "/static/review.js", f"/?token={token[:-1]}x"):
        status, body = served.request("GET", path, token=False)
        assert status == 403 and b"refused" in body and b"EditForge review" not in body
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", f"/?token={token}")
    response = conn.getresponse()
    assert response.status == 200 and b"EditForge review" in response.read()
    cookie = response.getheader("Set-Cookie")
    assert cookie == f"editforge_review_{served.port}={token}; HttpOnly; SameSite=Strict; Path=/"
    status, _ = served.request("GET", "/api/rows", headers={"Cookie": cookie.split(";")[0]}, token=False)
    assert status == 200
    status, _ = served.request("POST", "/api/rows/2/verdict", {"verdict": "accepted", "seen": {}}, token=False)
    assert status == 403 and served.session.waiting_updates() == 0


def test_a_change_from_another_origin_is_refused_even_with_the_cookie(served):
    seen = {r["row"]: r for r in served.json("GET", "/api/rows")[1]["rows"]}[2]["images"]
    body = {"verdict": "accepted", "seen": seen}
    for header in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                   {"Referer": "http://evil.example/page.html"}, {"Origin": f"http://127.0.0.1:{served.port + 1}"}):
        status, data = served.request("POST", "/api/rows/2/verdict", body, header)
        assert status == 403 and b"must come from the review page" in data, header
        assert served.session.waiting_updates() == 0
    status, _ = served.request("POST", "/api/rows/2/verdict", body, {"Origin": f"http://127.0.0.1:{served.port}"})
    assert status == 200 and served.session.waiting_updates() == 1


def test_export_writes_only_accepted_rows(served, tmp_path):
    rows = {r["row"]: r for r in served.json("GET", "/api/rows")[1]["rows"]}
    for row, verdict in ((2, "accepted"), (3, "rejected"), (4, "accepted")):
        served.json("POST", f"/api/rows/{row}/verdict", {"verdict": verdict, "seen": rows[row]["images"]})
    status, data = served.json("POST", "/api/export", {"format": "diffsynth", "out": "export"})
    assert status == 200, data
    assert data["exported"] == ["row 2", "row 4"] and data["out_dir"] == str(served.folder / "export")
    written = sorted(p.relative_to(served.folder / "export").as_posix()
                     for p in (served.folder / "export").rglob("*") if p.is_file())
    assert sum(p.startswith("target/") for p in written) == 2
    status, data = served.json("POST", "/api/export", {"format": "nope", "out": "export2"})
    assert status == 400 and "unknown export format" in data["error"]
    status, data = served.json("POST", "/api/export", {"format": "diffsynth", "out": ""})
    assert status == 400 and "output folder" in data["error"]


def test_export_waits_for_verdicts_a_synth_run_still_holds(served):
    rows = {r["row"]: r for r in served.json("GET", "/api/rows")[1]["rows"]}
    with RenderLock(served.path):
        served.json("POST", "/api/rows/2/verdict", {"verdict": "accepted", "seen": rows[2]["images"]})
        status, data = served.json("POST", "/api/export", {"format": "diffsynth", "out": "export"})
    assert status == 400 and "not in data.xlsx yet" in data["error"]
    assert not (served.folder / "export").exists()


def test_exports_go_only_under_the_export_dir(tmp_path):
    served = Served(tmp_path, export_dir=tmp_path / "exports")
    try:
        rows = {r["row"]: r for r in served.json("GET", "/api/rows")[1]["rows"]}
        served.json("POST", "/api/rows/2/verdict", {"verdict": "accepted", "seen": rows[2]["images"]})
        (tmp_path / "exports").mkdir()
        (tmp_path / "elsewhere").mkdir()
        os.symlink(tmp_path / "elsewhere", tmp_path / "exports" / "link")
        for out in (str(tmp_path / "abs"), "../book/x", "/etc/x", "C:\\x", "link/ds", "link", ".", ""):
            status, data = served.json("POST", "/api/export", {"format": "diffsynth", "out": out})
            assert status == 400 and ("inside" in data["error"] or "name an output folder" in data["error"]), out
        assert list((tmp_path / "elsewhere").iterdir()) == [] and not (tmp_path / "abs").exists()
        status, data = served.json("POST", "/api/export", {"format": "diffsynth", "out": "ds"})
        assert status == 200 and data["out_dir"] == str(tmp_path / "exports" / "ds")
    finally:
        served.stop()


def test_a_crafted_manifest_deletes_nothing(served, tmp_path):
    """`.editforge-export.json` lists what an earlier export wrote, for the next one to remove: entries
    outside the folder make it damaged, and nothing is deleted."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    rows = {r["row"]: r for r in served.json("GET", "/api/rows")[1]["rows"]}
    served.json("POST", "/api/rows/2/verdict", {"verdict": "accepted", "seen": rows[2]["images"]})
    for entries in (["../../victim.txt"], [str(victim)], ["target/../../../victim.txt"], [{"x": 1}], "victim.txt"):
        export = served.folder / "export"
        export.mkdir(exist_ok=True)
        (export / ".editforge-export.json").write_text(json.dumps({"files": entries}))
        status, data = served.json("POST", "/api/export", {"format": "diffsynth", "out": "export"})
        assert status == 400 and "is damaged" in data["error"] and "nothing was deleted" in data["error"], entries
        assert victim.read_text() == "precious"
    os.symlink(tmp_path, served.folder / "export" / "target")  # a folder inside that leads out
    (served.folder / "export" / ".editforge-export.json").write_text(json.dumps({"files": ["target/victim.txt"]}))
    status, data = served.json("POST", "/api/export", {"format": "diffsynth", "out": "export"})
    assert status == 400 and "through a symlink" in data["error"] and victim.read_text() == "precious"


@pytest.fixture
def outside(served, tmp_path):
    """A secret file beside the base dir, and symlinks inside the base dir pointing at it."""
    (tmp_path / "secret.png").write_bytes(SECRET)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.png").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.png", served.folder / "img" / "linked.png")
    os.symlink(tmp_path / "private", served.folder / "img" / "linked_dir")
    return tmp_path


@pytest.mark.parametrize("path", [
    "/files/../secret.png",
    "/files/img/../../secret.png",
    "/files/%2e%2e/secret.png",
    "/files/%2E%2E%2Fsecret.png",
    "/files/img/%2e%2e/%2e%2e/secret.png",
    "/files/img/..%5c..%5csecret.png",
    "/files//{outside}/secret.png",
    "/files/%2F{outside}%2Fsecret.png",
    "/files/img/linked.png",
    "/files/img/linked_dir/secret.png",
    "/files/data.xlsx",
    "/files/data.xlsx.journal.sqlite",
    "/files/img/r0.png%00.txt",
    "/../secret.png",
    "/static/../../../secret.png",
    "/static/%2e%2e/%2e%2e/%2e%2e/secret.png",
])
def test_paths_outside_the_base_dir_are_refused(served, outside, path):
    status, body = served.request("GET", path.format(outside=str(outside).lstrip("/")))
    assert status == (403 if path.startswith("/files/") else 404) and SECRET not in body
    assert b"PK" not in body[:2] and b"SQLite" not in body  # neither the workbook nor the journal


def test_refusals_say_refused_and_a_symlink_within_the_base_dir_is_fine(served, outside):
    assert served.request("GET", "/files/%2e%2e/secret.png")[0] == 403
    assert served.request("GET", "/files/img/linked.png")[0] == 403
    assert served.request("GET", "/files/img/missing.png")[0] == 404
    os.symlink(served.folder / "img" / "r0.png", served.folder / "img" / "alias.png")
    status, body = served.request("GET", "/files/img/alias.png")
    assert status == 200 and body == (served.folder / "img" / "r0.png").read_bytes()


def test_answers_on_a_kept_alive_connection_come_at_once(served):
    """Browsers keep the connection open. Without TCP_NODELAY on it, each answer's second packet waited for
    the client's delayed ACK: 40 ms on every request (asyncio sets it only on sockets made as IPPROTO_TCP)."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    cookie = {"Cookie": f"editforge_review_{served.port}={served.server.token}"}
    times = []
    for _ in range(7):
        started = time.perf_counter()
        conn.request("GET", "/api/state", headers=cookie)
        response = conn.getresponse()
        assert response.status == 200 and b"version" in response.read()
        times.append(time.perf_counter() - started)
    assert sorted(times)[3] < 0.03, times


def test_the_api_sends_one_page_filtered_counted_and_sorted_on_the_server(served):
    status, data = served.json("GET", "/api/rows?limit=2")
    assert status == 200 and [r["row"] for r in data["rows"]] == [2, 3]
    assert (data["offset"], data["total"], data["focus"], data["page_size"]) == (0, 5, 2, 2)
    assert data["summary"] == {"pending": 4, "accepted": 0, "rejected": 0, "queued": 1}  # of all rows, not the page
    _, data = served.json("GET", "/api/rows?limit=2&after=3")  # the next row is on the next page
    assert ([r["row"] for r in data["rows"]], data["offset"], data["focus"]) == ([4, 5], 2, 4)
    _, data = served.json("GET", "/api/rows?limit=2&before=4")
    assert ([r["row"] for r in data["rows"]], data["focus"]) == ([2, 3], 3)
    _, data = served.json("GET", "/api/rows?limit=2&status=queued")
    assert [r["row"] for r in data["rows"]] == [6] and data["total"] == 1
    _, data = served.json("GET", "/api/rows?sort=-contrast&mode=gen_raw")
    assert [r["row"] for r in data["rows"]] == [3]
    contrasts = {r["row"]: r["quality"]["std"] for r in served.json("GET", "/api/rows")[1]["rows"] if r["quality"]}
    _, data = served.json("GET", "/api/rows?sort=contrast")
    assert [r["row"] for r in data["rows"]][:3] == sorted(contrasts, key=contrasts.get)  # unknown ones last
    _, data = served.json("GET", f"/api/rows?contrast_min={sorted(contrasts.values())[1]}")
    assert sorted(r["row"] for r in data["rows"]) == sorted(r for r, c in contrasts.items() if c >= sorted(contrasts.values())[1])
    status, data = served.json("POST", "/api/rows/2/verdict", {"verdict": "accepted", "seen": served.json(
        "GET", "/api/rows?limit=1")[1]["rows"][0]["images"]})
    assert data["summary"]["accepted"] == 1
    _, data = served.json("GET", "/api/rows?status=pending&limit=2&around=2")  # row 2 left the filter: the next
    assert (data["focus"], data["total"]) == (3, 3)
    for bad, message in (("sort=score", "cannot sort by 'score'"), ("status=maybe", "unknown status"),
                         ("contrast_min=x", "contrast_min must be a number")):
        status, data = served.json("GET", f"/api/rows?{bad}")
        assert status == 400 and message in data["error"], bad


def test_the_state_a_page_polls_changes_its_version_with_the_rows(served):
    served.json("GET", "/api/state")
    served.session.source.wait(10)  # a newer version of the file being read, if there is one
    before = served.json("GET", "/api/state")[1]
    assert before["version"] == served.json("GET", "/api/state")[1]["version"]  # nothing happened
    rows = served.json("GET", "/api/rows")[1]["rows"]
    served.json("POST", "/api/rows/2/verdict", {"verdict": "rejected", "seen": rows[0]["images"]})
    after = served.json("GET", "/api/state")[1]
    assert after["version"] != before["version"] and after["summary"]["rejected"] == 1
    other_process_change(served.path, 3, {"review": "accepted"})  # another process (a second app, synth)
    assert served.json("GET", "/api/state")[1]["version"] != after["version"]
