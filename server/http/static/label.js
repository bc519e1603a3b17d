"use strict";
// The labelling page: one item at a time; answers by button or key (1..9, y/n for booleans),
// u takes the last answer back, s skips. Every action is one call of the JSON API.
const state = { task: null, item: null, answered: [], skipped: [], busy: false, urls: [], poll: null };
const POLL_MS = 2000;  // an empty queue is looked at again: statements waiting (sieve.label_wait) add items

function setState(name) { document.body.dataset.state = name; }

function say(text, kind) {
  const message = document.getElementById("message");
  message.textContent = text || "";
  message.className = kind || "";
}

function showProgress(progress) {
  const answered = progress.answered || 0, pending = progress.pending || 0;
  document.getElementById("answered").textContent = answered;
  document.getElementById("pending").textContent = pending;
  document.getElementById("by-you").textContent = progress.answered_by_role || 0;
  const bar = document.getElementById("progress-bar");
  bar.max = Math.max(1, answered + pending);
  bar.value = answered;
}

function choiceLabel(choice) {
  if (choice === true) return "Yes";
  if (choice === false) return "No";
  return String(choice);
}

function choiceKey(choice, index) {
  if (choice === true) return "y";
  if (choice === false) return "n";
  return index < 9 ? String(index + 1) : "";
}

function showTask(task) {
  if (state.task !== null) return;
  state.task = task;
  document.getElementById("function-name").textContent = task.function;
  document.getElementById("instructions").textContent = task.instructions;
  document.title = "SieveDB · label " + task.function;
  const box = document.getElementById("choices");
  task.choices.forEach((choice, index) => {
    const key = choiceKey(choice, index);
    const button = el("button", { type: "button", class: "choice", "data-value": JSON.stringify(choice), "data-key": key });
    button.append(el("span", {}, choiceLabel(choice)));
    if (key) button.append(el("kbd", {}, key));
    button.addEventListener("click", () => answer(choice));
    box.append(button);
  });
  document.getElementById("free-answer").hidden = task.choices.length > 0;
}

function showInput(input) {
  const box = el("figure", { class: "input", "data-kind": input.kind, "data-name": input.name });
  box.append(el("figcaption", {}, input.name + " (" + input.sql_type + ")"));
  if (input.kind === "image") {
    const img = el("img", { class: "item-image", alt: input.name, "data-width": input.width, "data-height": input.height });
    img.addEventListener("load", () => { img.dataset.loaded = "true"; });
    sieveBlob(input.url).then((url) => { state.urls.push(url); img.src = url; })
      .catch((error) => say("could not load the image: " + error.message, "error"));
    box.append(img);
  } else if (input.kind === "bytes") {
    box.append(el("p", { class: "muted" }, input.size + " bytes, not an image; the first bytes:"));
    box.append(el("pre", { class: "hex" }, input.hex + (input.truncated ? " …" : "")));
  } else if (input.kind === "text") {
    box.append(el("pre", { class: "text" }, input.text + (input.truncated ? " …" : "")));
  } else {
    box.append(el("p", { class: "muted" }, "NULL"));
  }
  return box;
}

function showItem(item) {
  state.urls.forEach((url) => URL.revokeObjectURL(url));
  state.urls = [];
  state.item = item;
  const section = document.getElementById("item");
  const inputs = document.getElementById("inputs");
  inputs.replaceChildren();
  document.getElementById("done").hidden = item !== null;
  section.hidden = item === null;
  document.getElementById("choices").hidden = item === null;
  if (item === null) {
    section.dataset.requestId = section.dataset.key = section.dataset.table = "";
    setState("empty");
    state.poll = setTimeout(() => { if (!state.busy) load(); }, POLL_MS);
    return;
  }
  section.dataset.requestId = item.request_id;
  section.dataset.key = item.key;
  section.dataset.table = item.table;
  document.getElementById("item-table").textContent = item.table;
  document.getElementById("item-key").textContent = item.key;
  item.inputs.forEach((input) => inputs.append(showInput(input)));
  setState("ready");
}

async function load() {
  clearTimeout(state.poll);
  state.busy = true;
  setState("busy");
  try {
    const data = await sieveApi("GET", "/api/label/next?skip=" + encodeURIComponent(state.skipped.join(",")));
    showTask(data.task);
    showProgress(data.progress);
    showItem(data.item);
  } catch (error) {
    failed(error);
  } finally {
    state.busy = false;
  }
}

function failed(error) {
  say(error.message + (error.sqlstate ? " (" + error.sqlstate + ")" : ""), "error");
  if (error.status === 401 || error.status === 403) setState("denied"); else setState("ready");
}

async function answer(choice) {
  if (state.busy || state.item === null) return;
  const requestId = state.item.request_id;
  state.busy = true;
  setState("busy");
  try {
    const data = await sieveApi("POST", "/api/label", { request_id: requestId, value: choice });
    state.answered.push(requestId);
    document.getElementById("undo").disabled = false;
    say("answered " + choiceLabel(choice) + " for " + state.item.key, "ok");
    showProgress(data.progress);
  } catch (error) {
    // 409 (answered already) and 410 (its row is gone): the item is over, go on with the queue
    if (error.status !== 409 && error.status !== 410) { state.busy = false; failed(error); return; }
    say(error.message, "error");
  }
  state.busy = false;
  await load();
}

async function undo() {
  if (state.busy || state.answered.length === 0) return;
  const requestId = state.answered[state.answered.length - 1];
  state.busy = true;
  setState("busy");
  try {
    await sieveApi("POST", "/api/label/undo", { request_id: requestId });
    state.answered.pop();
    state.skipped = state.skipped.filter((id) => id !== requestId);
    say("took back the answer for request " + requestId, "ok");
  } catch (error) {
    say(error.message + (error.sqlstate ? " (" + error.sqlstate + ")" : ""), "error");
  }
  document.getElementById("undo").disabled = state.answered.length === 0;
  state.busy = false;
  await load();
}

async function skip() {
  if (state.busy || state.item === null) return;
  state.skipped.push(state.item.request_id);
  await load();
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === "INPUT") return;
  const key = event.key.toLowerCase();
  if (key === "u") { event.preventDefault(); undo(); return; }
  if (key === "s") { event.preventDefault(); skip(); return; }
  if (state.task === null) return;
  const index = state.task.choices.findIndex((choice, i) => choiceKey(choice, i) === key);
  if (index >= 0) { event.preventDefault(); answer(state.task.choices[index]); }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("skip").addEventListener("click", skip);
  document.getElementById("free-answer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("free-value");
    answer(input.value).then(() => { input.value = ""; });
  });
  document.addEventListener("keydown", onKey);
  load();
});
