// The review page: one row at a time, verdicts through the JSON API, keyboard first.
// It holds one page of rows (the server filters, counts and sorts), polls /api/state and fetches its
// page again only when the state's version says something changed.
"use strict";

const LABELS = {raw_image: "sample (raw_image)", ref_image_1: "reference 1", ref_image_2: "reference 2",
                ref_image_3: "reference 3"};
const POLL_MS = 2000;  // picks up what a running synth writes meanwhile

let page = {rows: [], offset: 0, total: 0};  // one page of the rows passing the filters, from /api/rows
let version = null;   // the state the page was fetched at
let current = null;   // the row number on screen (kept across refreshes and filter changes)
let busy = false;
let drawn = "";       // what is on screen, so a refresh that changed nothing does not reload images
let modelOf = "";     // the picture whose model is shown: a refresh or filter change keeps it on screen
let loads = 0;        // fetches of the page started: an answer to an older one (a poll's) is dropped

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const init = body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
}

function fillSelect(select, values) {
  if (select.options.length > 1 || values.length === 0) return;
  for (const value of values) select.add(new Option(value, value));
}

// anchor: {around: row} (that row's page, or the next row in the order), {after: row}, {before: row}
async function load(anchor = {around: current}) {
  const query = new URLSearchParams();
  for (const [name, id] of [["status", "filter-status"], ["mode", "filter-mode"], ["sort", "sort"]]) {
    if ($(id).value) query.set(name, $(id).value);
  }
  for (const [name, row] of Object.entries(anchor)) if (row !== null && row !== undefined) query.set(name, row);
  const mine = ++loads;
  const data = await api(`/api/rows?${query}`);
  if (mine !== loads) return;  // a newer fetch (after a click, say) is under way
  page = {rows: data.rows, offset: data.offset, total: data.total};
  current = data.focus;
  version = data.version;
  $("workbook").textContent = data.sheet ? `${data.workbook} · ${data.sheet}` : data.workbook;
  fillSelect($("filter-status"), data.statuses);
  fillSelect($("filter-mode"), data.modes);
  if ($("sort").options.length === 0) for (const [value, label] of data.sorts) $("sort").add(new Option(label, value));
  for (const [id, values] of [["export-format", data.formats], ["export-family", data.families]]) {
    const select = $(id);
    if (select.options.length === 0) for (const v of values) select.add(new Option(v, v));
  }
  $("export").disabled = data.formats.length === 0;
  showState(data);
  render();
}

async function poll() {
  const data = await api("/api/state");
  showState(data);
  if (data.version !== version) await load();
}

function showState(data) {
  for (const [status, n] of Object.entries(data.summary)) {
    const cell = $(`n-${status}`);
    if (cell) cell.textContent = n;
  }
  let note = "";
  if (data.write_error) note = `not written yet: ${data.write_error}`;
  else if (data.held) note = data.held;
  else if (data.waiting_updates) note = `${data.waiting_updates} change(s) safe in the journal, not in the workbook file yet`;
  if (data.read_error) note = note ? `${note}; ${data.read_error}` : data.read_error;
  $("waiting").textContent = note;
}

function render() {
  const index = page.rows.findIndex((r) => r.row === current);
  const row = page.rows[index];
  const place = page.offset + index;  // among all the rows the filters select
  $("card").hidden = !row;
  $("empty").hidden = !!row;
  $("position").textContent = row ? `${place + 1} / ${page.total}` : "";
  const key = JSON.stringify([row, place, page.total]);
  if (!row || key === drawn) return;
  drawn = key;
  $("m-row").textContent = row.row;
  $("m-status").textContent = row.status;
  $("m-status").className = `pill ${row.status}`;
  $("m-mode").textContent = row.mode;
  $("m-seed").textContent = row.seed ?? "—";
  $("m-quality").textContent = quality(row.quality);
  $("m-judge").textContent = row.judge_score === null || row.judge_score === undefined
    ? (row.judge_reason || "—") : `${row.judge_score.toFixed(3)}${row.judge_reason ? " · " + row.judge_reason : ""}`;
  $("m-prompt").textContent = row.prompt || "—";
  $("m-instruction").textContent = row.instruction;
  $("m-instruction-line").hidden = !row.instruction || row.instruction === row.prompt;
  $("m-genstatus").textContent = row.gen_status;
  $("m-genstatus-line").hidden = !row.gen_status;
  showImages(row);
  const picture = `${row.row}:${row.images[row.generated] || ""}`;
  if (picture !== modelOf) {  // another row or a new picture: its PNG says which model made it
    modelOf = picture;
    $("m-model").textContent = "…";
    api(`/api/rows/${row.row}`).then((data) => {
      if (modelOf === picture) $("m-model").textContent = data.params.model || "—";
    }).catch(() => { if (modelOf === picture) $("m-model").textContent = "—"; });
  }
  $("prev").disabled = place <= 0;
  $("next").disabled = place >= page.total - 1;
  $("regenerate").disabled = !row.generated;
  for (const id of ["accept", "reject", "undo"]) $(id).disabled = row.status === "queued";
}

function quality(q) {
  if (!q) return "—";
  const parts = [];
  if (q.std !== undefined) parts.push(`contrast ${q.std.toFixed(1)}`);
  if (q.input_diff_p995 !== undefined) parts.push(`change vs input ${q.input_diff_p995.toFixed(1)}`);
  if (q.mean !== undefined) parts.push(`brightness ${q.mean.toFixed(0)}`);
  return parts.join(" · ");
}

function showImages(row) {
  const box = $("images");
  box.replaceChildren();
  // references on the left in slot order, the sample on the right: the pair the trainer sees
  const keys = ["ref_image_1", "ref_image_2", "ref_image_3", "raw_image"].filter((k) => row.images[k]);
  box.style.setProperty("--columns", Math.max(keys.length, 1));
  for (const key of keys) {
    const figure = document.createElement("figure");
    if (key === row.generated) figure.classList.add("generated");
    const url = row.urls[key];
    if (url) {
      const img = document.createElement("img");
      img.src = url;
      img.alt = `${LABELS[key]}: ${row.images[key]}`;
      img.onerror = () => figure.classList.add("missing");
      figure.append(img);
    } else {
      const p = document.createElement("p");
      p.textContent = "outside the base dir: not shown";
      figure.append(p);
    }
    const caption = document.createElement("figcaption");
    caption.textContent = `${LABELS[key]}${key === row.generated ? " · generated" : ""} — ${row.images[key]}`;
    figure.append(caption);
    box.append(figure);
  }
}

async function move(step) {
  const index = page.rows.findIndex((r) => r.row === current);
  const next = page.rows[index + step];
  if (next) { current = next.row; render(); return; }
  const place = page.offset + index + step;
  if (index < 0 || busy || place < 0 || place >= page.total) return;
  busy = true;  // the neighbour is on another page
  try {
    await load(step > 0 ? {after: current} : {before: current});
  } catch (error) {
    say(error.message, "error");
  } finally {
    busy = false;
  }
}

async function act(kind) {
  const row = page.rows.find((r) => r.row === current);
  if (!row || busy) return;
  busy = true;
  try {
    if (kind === "regenerate") {
      const data = await api(`/api/rows/${row.row}/regenerate`, {seen: row.images, row_id: row.row_id});
      say(`row ${row.row}: ${data.moved_to ? `old picture moved to ${data.moved_to}; ` : ""}` +
          "the next editforge synth makes a new one");
    } else {
      const verdict = {accept: "accepted", reject: "rejected", undo: ""}[kind];
      await api(`/api/rows/${row.row}/verdict`, {verdict, seen: row.images, row_id: row.row_id});
      say(`row ${row.row}: ${verdict || "verdict cleared"}`);
    }
    await load(kind === "undo" ? {around: row.row} : {after: row.row});  // on to the next one
  } catch (error) {
    say(error.message, "error");
    if (error.message.includes("changed since")) await load();
  } finally {
    busy = false;
  }
}

async function exportAccepted() {
  try {
    say("exporting accepted rows…");
    const data = await api("/api/export", {format: $("export-format").value, out: $("export-out").value,
                                           model_family: $("export-family").value});
    say(data.message);
  } catch (error) {
    say(error.message, "error");
  }
}

document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = {a: () => act("accept"), r: () => act("reject"), g: () => act("regenerate"),
                   u: () => act("undo"), ArrowLeft: () => move(-1), ArrowRight: () => move(1)};
  const action = actions[event.key];
  if (action) { event.preventDefault(); action(); }
});

for (const kind of ["accept", "reject", "regenerate", "undo"]) $(kind).onclick = () => act(kind);
$("prev").onclick = () => move(-1);
$("next").onclick = () => move(1);
for (const id of ["filter-status", "filter-mode", "sort"]) $(id).onchange = () => load().catch((e) => say(e.message, "error"));
$("export").onclick = exportAccepted;

load().catch((error) => say(error.message, "error"));
setInterval(() => { if (!busy && !document.hidden) poll().catch(() => {}); }, POLL_MS);
