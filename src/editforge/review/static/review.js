// The review page: one row at a time, verdicts through the JSON API, keyboard first.
"use strict";

const LABELS = {raw_image: "sample (raw_image)", ref_image_1: "reference 1", ref_image_2: "reference 2",
                ref_image_3: "reference 3"};
const REFRESH_MS = 5000;  // picks up what a running synth writes meanwhile

let rows = [];        // every reviewable row, from /api/rows
let shown = [];       // rows passing the filters
let current = null;   // the row number on screen (kept across refreshes and filter changes)
let busy = false;
let drawn = "";       // what is on screen, so a refresh that changed nothing does not reload images
let modelOf = "";     // the picture whose model is shown: a refresh or filter change keeps it on screen

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

async function load() {
  const data = await api("/api/rows");
  rows = data.rows;
  $("workbook").textContent = data.sheet ? `${data.workbook} · ${data.sheet}` : data.workbook;
  fillSelect($("filter-status"), data.statuses);
  fillSelect($("filter-mode"), data.modes);
  for (const [id, values] of [["export-format", data.formats], ["export-family", data.families]]) {
    const select = $(id);
    if (select.options.length === 0) for (const v of values) select.add(new Option(v, v));
  }
  $("export").disabled = data.formats.length === 0;
  showState(data);
  applyFilters();
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
  $("waiting").textContent = note;
}

function applyFilters() {
  const status = $("filter-status").value, mode = $("filter-mode").value;
  shown = rows.filter((r) => (!status || r.status === status) && (!mode || r.mode === mode));
  if (!shown.some((r) => r.row === current)) {
    // keep the place: the first shown row at or after the one we were on
    const next = shown.find((r) => current === null || r.row >= current) || shown[shown.length - 1];
    current = next ? next.row : null;
  }
  render();
}

function render() {
  const index = shown.findIndex((r) => r.row === current);
  const row = shown[index];
  $("card").hidden = !row;
  $("empty").hidden = !!row;
  $("position").textContent = row ? `${index + 1} / ${shown.length}` : "";
  const key = JSON.stringify([row, index, shown.length]);
  if (!row || key === drawn) return;
  drawn = key;
  $("m-row").textContent = row.row;
  $("m-status").textContent = row.status;
  $("m-status").className = `pill ${row.status}`;
  $("m-mode").textContent = row.mode;
  $("m-seed").textContent = row.seed ?? "—";
  $("m-quality").textContent = quality(row.quality);
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
  $("prev").disabled = index <= 0;
  $("next").disabled = index >= shown.length - 1;
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

function move(step) {
  const index = shown.findIndex((r) => r.row === current);
  const next = shown[index + step];
  if (next) { current = next.row; render(); }
}

function replaceRow(updated, number) {
  const i = rows.findIndex((r) => r.row === number);
  if (updated && i >= 0) rows[i] = updated;
  else if (!updated && i >= 0) rows.splice(i, 1);
}

async function act(kind) {
  const row = shown.find((r) => r.row === current);
  if (!row || busy) return;
  busy = true;
  try {
    let data;
    if (kind === "regenerate") {
      data = await api(`/api/rows/${row.row}/regenerate`, {seen: row.images, row_id: row.row_id});
      say(`row ${row.row}: ${data.moved_to ? `old picture moved to ${data.moved_to}; ` : ""}` +
          "the next editforge synth makes a new one");
    } else {
      const verdict = {accept: "accepted", reject: "rejected", undo: ""}[kind];
      data = await api(`/api/rows/${row.row}/verdict`, {verdict, seen: row.images, row_id: row.row_id});
      say(`row ${row.row}: ${verdict || "verdict cleared"}`);
    }
    replaceRow(data.row, row.row);
    showState(data);
    const index = shown.findIndex((r) => r.row === row.row);
    const after = shown[index + 1];
    if (kind !== "undo" && after) current = after.row;   // on to the next one
    applyFilters();
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
$("filter-status").onchange = applyFilters;
$("filter-mode").onchange = applyFilters;
$("export").onclick = exportAccepted;

load().catch((error) => say(error.message, "error"));
setInterval(() => { if (!busy && !document.hidden) load().catch(() => {}); }, REFRESH_MS);
